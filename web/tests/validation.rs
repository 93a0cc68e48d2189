//! Every validation rule of SPEC §5: apply a bad definition through the API, get a 400 whose
//! message names the culprit, and nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use web::config::{MinioConfig, Secret};
use web::testing::TestServer;

const GOOD_PIPELINE: &str = r#"
version: 1.0
name: pl
inputs: [{name: in1, type: env}]
contexts: [{name: ctx, type: env}]
dag:
  - {name: first, needs: [root]}
  - {name: second, needs: [first]}
tasks:
  - alias: first
    type: os
    commands: ['echo ${{ inputs.in1 }}', 'export OUT=x']
    outputs: [{name: out, value: OUT, type: env, setToContext: ctx}]
  - alias: second
    type: os
    commands: ['echo ${{ outputs.first.out }}']
outputs: [{name: result, value: "${{ outputs.first.out }}"}]
"#;

/// (case, kind, document, fragment the message must contain)
fn cases() -> Vec<(&'static str, &'static str, String, &'static str)> {
    let pl = |from: &str, to: &str| {
        let s = GOOD_PIPELINE.replace(from, to);
        assert_ne!(s, GOOD_PIPELINE, "case edit {from:?} did not apply");
        s
    };
    vec![
        // ---- §5.1 actuators
        ("actuator: two kinds", "actuator",
         "name: a1\nos: {user: u, ip: h, password: p}\nkubernetes: {config: x}\ntags: [t]\n".into(), "exactly one of os, docker, kubernetes"),
        ("actuator: no kind and no tunnel", "actuator", "name: a1\ntags: [t]\n".into(), "tunnel alone"),
        ("actuator: no tags", "actuator", "name: a1\nos: {user: u, ip: h, password: p}\n".into(), "tags is required"),
        ("actuator: no secret", "actuator", "name: a1\nos: {user: u, ip: h}\ntags: [t]\n".into(), "os: set password or privateKey"),
        ("actuator: empty name", "actuator", "name: ''\nos: {user: u, ip: h, password: p}\ntags: [t]\n".into(), "actuator name is empty"),
        ("actuator: tunnel without token", "actuator", "name: a1\ntunnel: {clientId: c}\ntags: [t]\n".into(), "tunnel.clientToken"),
        ("actuator: docker with ip and socket", "actuator", "name: a1\ndocker: {ip: h, socket: /run/d.sock}\ntags: [t]\n".into(), "set ip (and port) or socket, not both"),
        ("actuator: docker socket the server does not allow", "actuator", "name: a1\ndocker: {socket: /run/mysqld/mysqld.sock}\ntags: [t]\n".into(), "is not one this server allows (actuators.dockerSockets"),
        ("actuator: docker port 0", "actuator", "name: a1\ndocker: {ip: h, port: 0}\ntags: [t]\n".into(), "docker.port is 0"),
        ("actuator: kubernetes, not a kubeconfig", "actuator", "name: a1\nkubernetes: {config: x}\ntags: [t]\n".into(), "kubernetes.config is not a kubeconfig"),
        ("actuator: unknown field", "actuator", "name: a1\nos: {user: u, ip: h, password: p, passwd: q}\ntags: [t]\n".into(), "passwd"),
        // ---- §5.2 pipelines
        ("pipeline: empty name", "pipeline", pl("name: pl", "name: ''"), "pipeline name is empty"),
        ("pipeline: empty version", "pipeline", pl("version: 1.0", "version: ''"), "version is empty"),
        ("pipeline: version latest", "pipeline", pl("version: 1.0", "version: latest"), "\"latest\" is reserved"),
        ("pipeline: version too long", "pipeline", pl("version: 1.0", &format!("version: v{}", "9".repeat(70))), "longer than 64 characters"),
        ("event: version too long", "event", format!("name: e\nversion: v{}\n", "9".repeat(70)), "longer than 64 characters"),
        ("pipeline: no tasks", "pipeline", "version: 1\nname: pl\ndag: []\ntasks: []\n".into(), "no tasks"),
        ("pipeline: duplicate alias", "pipeline", pl("alias: second", "alias: first"), "duplicate task alias \"first\""),
        ("pipeline: unknown type", "pipeline", pl("alias: second\n    type: os", "alias: second\n    type: lambda"), "unknown type \"lambda\""),
        ("pipeline: docker without image", "pipeline", pl("alias: second\n    type: os", "alias: second\n    type: docker"), "task \"second\": image is missing"),
        ("pipeline: pipeline task without image", "pipeline", pl("alias: second\n    type: os", "alias: second\n    type: pipeline"), "task \"second\": image is missing"),
        ("pipeline: empty commands", "pipeline", pl("commands: ['echo ${{ outputs.first.out }}']", "commands: []"), "task \"second\": commands is empty"),
        ("pipeline: task missing from dag", "pipeline", pl("  - {name: second, needs: [first]}\n", ""), "task \"second\" is missing from the dag"),
        ("pipeline: dag without root", "pipeline", pl("needs: [root]", "needs: [second]"), "root"),
        ("pipeline: cycle", "pipeline", pl("{name: first, needs: [root]}", "{name: first, needs: [root, second]}"), "cycle"),
        ("pipeline: undeclared input", "pipeline", pl("echo ${{ inputs.in1 }}", "echo ${{ inputs.nope }}"), "undeclared input \"nope\""),
        ("pipeline: undeclared context", "pipeline", pl("echo ${{ outputs.first.out }}'", "echo ${{ contexts.nope }}'"), "undeclared context \"nope\""),
        ("pipeline: output of a task that does not run before", "pipeline",
         pl("commands: ['echo ${{ inputs.in1 }}'", "commands: ['echo ${{ outputs.second.x }}'"), "task \"second\" does not run before"),
        ("pipeline: output the task does not have", "pipeline", pl("echo ${{ outputs.first.out }}'", "echo ${{ outputs.first.nope }}'"), "has no output \"nope\""),
        ("pipeline: pipeline output of a missing output", "pipeline", pl("value: \"${{ outputs.first.out }}\"", "value: \"${{ outputs.first.zz }}\""), "output \"result\""),
        ("pipeline: setToContext undeclared", "pipeline", pl("setToContext: ctx", "setToContext: other"), "setToContext \"other\" is not a declared context"),
        ("pipeline: malformed placeholder", "pipeline", pl("echo ${{ inputs.in1 }}", "echo ${{inputs.in1}}"), "malformed placeholder"),
        ("pipeline: child image does not exist", "pipeline",
         pl("alias: second\n    type: os", "alias: second\n    type: pipeline\n    image: ghost:1.0"), "pipeline kakj/ghost:1.0 does not exist"),
        ("pipeline: child input does not exist", "pipeline",
         pl("alias: second\n    type: os\n    commands: ['echo ${{ outputs.first.out }}']", "alias: second\n    type: pipeline\n    image: child:1.0\n    inputs: [{name: nope, value: x}]"),
         "input \"nope\" is not an input of pipeline kakj/child:1.0"),
        ("pipeline: child output does not exist", "pipeline",
         pl("alias: second\n    type: os\n    commands: ['echo ${{ outputs.first.out }}']", "alias: second\n    type: pipeline\n    image: child\n    outputs: [{name: got, value: nope}]"),
         "\"nope\" is not an output of pipeline kakj/child:1.0"),
        ("pipeline: unknown field", "pipeline", pl("    outputs: [{name: out, value: OUT", "    outptus: []\n    outputs: [{name: out, value: OUT"), "outptus"),
        ("pipeline: wrong type", "pipeline", pl("tasks:\n  - alias: first\n", "tasks:\n  - alias: first\n    timeout: soon\n"), "timeout"),
        // ---- numbers: documented ranges (docs/LIMITS.md), the field named
        ("pipeline: timeout past 7 days", "pipeline", pl("tasks:\n  - alias: first\n", "tasks:\n  - alias: first\n    timeout: 604801\n"), "task \"first\": timeout 604801 is more than 604800 seconds"),
        ("pipeline: timeout i64::MAX", "pipeline", pl("tasks:\n  - alias: first\n", "tasks:\n  - alias: first\n    timeout: 9223372036854775807\n"), "timeout 9223372036854775807 is more than 604800"),
        ("pipeline: negative timeout", "pipeline", pl("tasks:\n  - alias: first\n", "tasks:\n  - alias: first\n    timeout: -1\n"), "tasks[0].timeout"),
        ("pipeline: timeout past u64", "pipeline", pl("tasks:\n  - alias: first\n", "tasks:\n  - alias: first\n    timeout: 1e30\n"), "tasks[0].timeout"),
        ("actuator: port past 65535", "actuator", "name: a1\nos: {user: u, ip: h, port: 65536, password: p}\ntags: [t]\n".into(), "os.port"),
        ("actuator: negative docker port", "actuator", "name: a1\ndocker: {ip: h, port: -1}\ntags: [t]\n".into(), "docker.port"),
        ("event: negative timestamp", "event", "name: e\nversion: 1\ntimestamp: -1\n".into(), "timestamp -1 is not between 0 and 253402300799999"),
        ("event: timestamp past year 9999", "event", "name: e\nversion: 1\ntimestamp: 253402300800000\n".into(), "timestamp 253402300800000 is not between"),
        // ---- names: no control, bidi or zero-width characters
        ("actuator: bidi override in the name", "actuator", "name: \"ab\\u202Ec\"\nos: {user: u, ip: h, password: p}\ntags: [t]\n".into(), "(U+202E), an invisible or text-direction character"),
        ("actuator: zero-width space in a tag", "actuator", "name: a1\nos: {user: u, ip: h, password: p}\ntags: [\"t\\u200Bt\"]\n".into(), "tag \"t\\u{200b}t\" contains the character"),
        ("pipeline: isolate in the name", "pipeline", pl("name: pl", "name: \"p\\u2066l\""), "(U+2066)"),
        ("pipeline: BOM in a task alias", "pipeline", pl("alias: second", "alias: \"sec\\uFEFFond\""), "(U+FEFF)"),
        ("event: word joiner in the name", "event", "name: \"e\\u2060v\"\nversion: 1\n".into(), "(U+2060)"),
        ("trigger: zero-width joiner in eventName", "trigger", "name: t1\neventName: \"e\\u200Dv\"\neventVersion: 1\npipelines: [{image: child:1.0}]\n".into(), "(U+200D)"),
        ("event: C1 control in the name", "event", "name: \"e\\x85v\"\nversion: 1\n".into(), "contains the character"),
        // ---- §5.3 triggers
        ("trigger: no pipelines", "trigger", "name: t1\neventName: e\neventVersion: 1\n".into(), "pipelines is empty"),
        ("trigger: empty eventName", "trigger", "name: t1\neventName: ''\neventVersion: 1\npipelines: [{image: child:1.0}]\n".into(), "eventName is empty"),
        ("trigger: empty eventVersion", "trigger", "name: t1\neventName: e\npipelines: [{image: child:1.0}]\n".into(), "eventVersion is empty"),
        ("trigger: another user's pipeline", "trigger", "name: t1\neventName: e\neventVersion: 1\npipelines: [{image: bob/child:1.0}]\n".into(), "pipeline bob/child:1.0 does not exist"),
        ("trigger: missing pipeline", "trigger", "name: t1\neventName: e\neventVersion: 1\npipelines: [{image: ghost:2.0}]\n".into(), "pipeline kakj/ghost:2.0 does not exist"),
        ("trigger: filter without matches", "trigger", "name: t1\neventName: e\neventVersion: 1\nfilters: [{expr: labels.user}]\npipelines: [{image: child:1.0}]\n".into(), "filters[0] (labels.user): matches is empty"),
        ("trigger: undeclared input", "trigger", "name: t1\neventName: e\neventVersion: 1\npipelines: [{image: child:1.0, inputs: [{name: nope, value: values.x}]}]\n".into(), "input \"nope\" is not an input of pipeline kakj/child:1.0"),
        ("pipeline: file input without minio", "pipeline", pl("{name: in1, type: env}", "{name: in1, type: file}"), "input \"in1\": file values need the minio"),
        // ---- §5.4 events
        ("event: empty name", "event", "name: ''\nversion: 1\n".into(), "event name is empty"),
        ("event: empty version", "event", "name: e\nversion: ''\n".into(), "version is empty"),
        ("event: file without minio", "event", "name: e\nversion: 1\nfiles: {f: {value: a/b, type: minio}}\n".into(), "minio"),
        ("event: unknown field", "event", "name: e\nversion: 1\nvalus: {a: 1}\n".into(), "valus"),
    ]
}

fn path(kind: &str) -> &'static str {
    match kind {
        "actuator" => "/api/actuator/apply",
        "pipeline" => "/api/pipeline-definition/apply",
        "trigger" => "/api/trigger-definition/apply",
        _ => "/api/event/send",
    }
}

#[test]
fn every_rule_names_the_culprit() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let child = "version: 1.0\nname: child\ninputs: [{name: cin, type: env}]\ndag: [{name: c, needs: [root]}]\ntasks: [{alias: c, type: os, commands: [echo], outputs: [{name: co, value: X}]}]\noutputs: [{name: cout, value: '${{ outputs.c.co }}'}]\n";
    api.post("/api/pipeline-definition/apply", child).ok();
    api.post("/api/pipeline-definition/apply", GOOD_PIPELINE)
        .ok();

    let mut failures = Vec::new();
    for (case, kind, doc, needle) in cases() {
        let r = api.post(path(kind), &doc);
        if r.status != 400 || r.body["status"] != 400 || !r.msg().contains(needle) {
            failures.push(format!(
                "{case}: got {} {:?}, wanted 400 mentioning {needle:?}",
                r.status,
                r.msg()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // nothing bad was stored: still exactly the two good pipelines, no actuators or triggers
    assert_eq!(
        api.get("/api/pipeline-definition/")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        api.get("/api/actuator/").ok().as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(
        api.get("/api/trigger-definition/")
            .ok()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

/// Rules that need file values, so a server with S3 configured.
#[test]
fn type_rules_with_files_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = TestServer::config(
        &format!("sqlite://{}/e.db", tmp.path().display()),
        tmp.path().to_path_buf(),
    );
    config.minio = Some(MinioConfig {
        server: "http://127.0.0.1:9".into(),
        access_key_id: "k".into(),
        secret_access_key: Secret("s".into()),
        ssl: false,
        base_path: "eventops".into(),
        region: "us-east-1".into(),
        max_upload_bytes: 1 << 20,
    });
    let server = TestServer::with_config(config);
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let child = "version: 1\nname: child\ninputs: [{name: fin, type: file}]\ndag: [{name: c, needs: [root]}]\ntasks: [{alias: c, type: os, commands: [echo], outputs: [{name: co, value: /tmp/x, type: file}]}]\noutputs: [{name: cout, value: '${{ outputs.c.co }}'}]\n";
    api.post("/api/pipeline-definition/apply", child).ok();

    let r = api.post(
        "/api/pipeline-definition/apply",
        GOOD_PIPELINE
            .replace("setToContext: ctx", "type: file, setToContext: ctx")
            .replace("type: env, type: file", "type: file"),
    );
    r.fails(
        400,
        "setToContext \"ctx\" is a env context but the output is file",
    );

    let parent = "version: 1\nname: parent\ndag: [{name: p, needs: [root]}]\ntasks:\n  - alias: p\n    type: pipeline\n    image: child:1\n    inputs: [{name: fin, value: plain text}]\n";
    api.post("/api/pipeline-definition/apply", parent).fails(
        400,
        "input \"fin\" is file in pipeline kakj/child:1 but the value given is env",
    );
    let parent_out = "version: 1\nname: parent\ndag: [{name: p, needs: [root]}]\ntasks:\n  - alias: p\n    type: pipeline\n    image: child\n    outputs: [{name: got, value: cout, type: env}]\n";
    api.post("/api/pipeline-definition/apply", parent_out)
        .fails(
            400,
            "output \"got\" is declared env but output \"cout\" of pipeline kakj/child:1 is file",
        );
    // and with S3 configured, a file event is accepted
    api.post(
        "/api/event/send",
        "name: e\nversion: 1\nfiles: {f: {value: a/b, type: minio}}\n",
    )
    .ok();
    // keys that cannot name an object, or name someone else's, are refused
    for (key, msg) in [
        (
            "../etc/passwd",
            "files.f.value: file key \"../etc/passwd\" has an empty, '.' or '..' segment",
        ),
        ("a//b", "has an empty"),
        ("/abs", "has an empty"),
        ("pipeline-x/y", "pipeline-<id> needs a number"),
        (
            "pipeline-12345/task-1/out",
            "files.f.value: file \"pipeline-12345/task-1/out\" does not exist",
        ),
        ("uploads/mallory/1/x", "does not exist"),
    ] {
        let event =
            serde_json::json!({"name": "e", "version": "1", "files": {"f": {"value": key}}});
        api.post("/api/event/send", event.to_string())
            .fails(400, msg);
    }
    // a literal file output path may not leave the work directory
    let up = "version: 1\nname: up\ndag: [{name: c, needs: [root]}]\ntasks: [{alias: c, type: os, commands: [echo], outputs: [{name: co, value: a/../../x, type: file}]}]\n";
    api.post("/api/pipeline-definition/apply", up)
        .fails(400, "path \"a/../../x\" leaves the work directory");
    // uploads need a length and a name that can be a file name
    api.post("/api/file/upload?name=..", "x")
        .fails(400, "cannot name an object");
    api.post("/api/file/upload", "x").fails(400, "query");
    api.post("/api/file/upload?name=big", vec![b'x'; (1 << 20) + 1])
        .fails(413, "larger than the limit");
}

/// A pipeline that reaches itself through pipeline-type tasks would nest without end.
#[test]
fn self_nesting_is_refused() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let a = "version: 1\nname: a\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: os, commands: [echo]}]\n";
    api.post("/api/pipeline-definition/apply", a).ok();
    let b = "version: 1\nname: b\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: pipeline, image: a}]\n";
    api.post("/api/pipeline-definition/apply", b).ok();
    let a2 = "version: 2\nname: a\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: pipeline, image: b}]\n";
    api.post("/api/pipeline-definition/apply", a2)
        .fails(400, "runs itself");
}

/// A kubeconfig the client could use (the server needs not exist for apply).
fn kubeconfig(context: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]
    })
    .to_string()
}

#[test]
fn kubernetes_actuators_are_checked_at_apply() {
    let server = TestServer::start();
    let mut api = Api::new(&server.url);
    api.login_as("kakj");
    let act = |extra: &str, ctx: &str| {
        format!(
            "name: k\nkubernetes: {{config: {}{extra}}}\ntags: [k8s]\n",
            serde_json::to_string(&kubeconfig(ctx)).unwrap()
        )
    };
    api.post("/api/actuator/apply", act("", "nope"))
        .fails(400, "kubernetes.config has no context \"nope\"");
    api.post("/api/actuator/apply", act(", namespace: Bad_NS", "x"))
        .fails(
            400,
            "kubernetes.namespace \"Bad_NS\" is not a Kubernetes name",
        );
    api.post(
        "/api/actuator/apply",
        act(", namespacePrefix: \"a.b-\"", "x"),
    )
    .fails(400, "kubernetes.namespacePrefix");
    api.post(
        "/api/actuator/apply",
        format!(
            "name: k\nkubernetes: {{config: {}}}\ntunnel: {{clientId: c, clientToken: t}}\ntags: [k8s]\n",
            serde_json::to_string(&kubeconfig("x")).unwrap()
        ),
    )
    .ok(); // a cluster reached through a tunnel client (tunnel-client/tests/kubernetes_tunnel.rs)
           // a good one: stored, the kubeconfig never shown
    let v = api.post("/api/actuator/apply", act("", "x")).ok();
    assert!(!v.to_string().contains("token"), "{v}");
    let v = api.get("/api/actuator/k").ok();
    assert!(!v.to_string().contains("\"t\""), "{v}");
    assert_eq!(
        v["definition"]["kubernetes"]["namespacePrefix"], "pipelines-",
        "{v}"
    );
    // a k8s task needs an image
    api.post(
        "/api/pipeline-definition/apply",
        "version: 1\nname: p\ndag: [{name: t, needs: [root]}]\ntasks: [{alias: t, type: k8s, commands: [echo]}]\n",
    )
    .fails(400, "image is missing");
}
