//! Property tests (proptest): the parsers never panic, and no event value escapes its quoting
//! in a rendered run.sh, whatever it contains and wherever the placeholder stands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use engine::script::{render_run_sh, RunScript, Values};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn documents_never_panic(text in "\\PC{0,200}") {
        let _ = engine::document::parse_value(&text);
        let _ = engine::document::parse::<engine::definition::PipelineDef>(&text);
        let _ = engine::document::parse::<engine::definition::EventDoc>(&text);
    }

    #[test]
    fn yaml_shaped_documents_never_panic(text in "[a-z:\\-\\[\\]{}, \\n'\"0-9.#&*!|>]{0,200}") {
        let _ = engine::document::parse_value(&text);
        let _ = engine::document::parse::<engine::definition::TriggerDef>(&text);
    }

    #[test]
    fn placeholders_never_panic(text in "(\\PC|\\$\\{\\{ |\\}\\}|inputs\\.|outputs\\.){0,40}") {
        let _ = engine::placeholder::parse(&text);
    }
}

proptest! {
    // each case runs bash once per quoting context: fewer cases
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn values_never_escape_their_quoting(value in "(\\PC|[\"'`$\\\\\n(){};|&<>*?~!#])*") {
        let dir = tempfile::tempdir().unwrap();
        let mut values = Values::default();
        values.inputs.insert("x".into(), value.clone());
        let contexts = [
            ("bare", "printf %s ${{ inputs.x }} > out"),
            ("double", "printf %s \"${{ inputs.x }}\" > out"),
            ("single", "printf %s '${{ inputs.x }}' > out"),
            ("mixed", "printf %s \"a\"${{ inputs.x }}'b' > out"),
        ];
        for (name, cmd) in contexts {
            let commands = vec![cmd.to_string()];
            let sh = render_run_sh(&RunScript {
                pipeline_id: 1,
                task_id: 2,
                alias: "t",
                secret: "s",
                callback_url: "http://127.0.0.1:9/",
                commands: &commands,
                env_outputs: &[],
                values: &values,
                callback_budget_secs: 0,
                callback_in_background: false,
                downloads: &Default::default(),
                uploads: &[],
            })
            .unwrap();
            std::fs::write(dir.path().join("run.sh"), sh).unwrap();
            let out = std::process::Command::new("bash")
                .arg("run.sh")
                .current_dir(dir.path())
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap();
            prop_assert!(out.status.success(), "{} context: {:?}", name, out);
            let printed = String::from_utf8_lossy(&std::fs::read(dir.path().join("out")).unwrap()).to_string();
            // the placeholder is quoted for its context: the value arrives whole and literal,
            // never split, globbed or run
            let expected = if name == "mixed" { format!("a{value}b") } else { value.clone() };
            prop_assert_eq!(printed, expected, "{} context", name);
        }
    }
}
