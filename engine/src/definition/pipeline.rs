//! Pipeline definitions (SPEC §5.2): versioned DAGs of tasks, and every apply-time rule.

use super::{check_name, Selector, ValueType, FILES_DISABLED};
use crate::dag::Dag;
use crate::document::stringish;
use crate::placeholder::{self, Ref};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Default task timeout in seconds.
pub const DEFAULT_TIMEOUT: u64 = 3600;

/// Longest task timeout in seconds (7 days; docs/LIMITS.md).
pub const MAX_TIMEOUT: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PipelineDef {
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub version: String,
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator_selector: Option<Selector>,
    #[serde(default)]
    pub inputs: Vec<Param>,
    #[serde(default)]
    pub contexts: Vec<Param>,
    #[serde(default)]
    pub dag: Vec<DagNode>,
    #[serde(default)]
    pub tasks: Vec<TaskDef>,
    #[serde(default)]
    pub outputs: Vec<PipelineOutput>,
}

/// A declared input or context.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: ValueType,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DagNode {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::vec")]
    pub needs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskDef {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub alias: String,
    /// `os | docker | k8s | pipeline`, checked by `validate` for a precise message.
    #[serde(rename = "type", default, deserialize_with = "stringish::deserialize")]
    pub kind: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<TaskInput>,
    #[serde(default)]
    pub outputs: Vec<TaskOutput>,
}

/// A pipeline-type task's input: a value for the child pipeline's declared input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskOutput {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub value: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_to_context: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineOutput {
    #[serde(deserialize_with = "stringish::deserialize")]
    pub name: String,
    #[serde(default, deserialize_with = "stringish::deserialize")]
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Os,
    Docker,
    K8s,
    Pipeline,
}

impl TaskKind {
    pub fn parse(s: &str) -> Option<TaskKind> {
        match s {
            "os" => Some(TaskKind::Os),
            "docker" => Some(TaskKind::Docker),
            "k8s" | "kubernetes" => Some(TaskKind::K8s),
            "pipeline" => Some(TaskKind::Pipeline),
            _ => None,
        }
    }

    /// The canonical name (`kubernetes` is spelt `k8s`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Os => "os",
            TaskKind::Docker => "docker",
            TaskKind::K8s => "k8s",
            TaskKind::Pipeline => "pipeline",
        }
    }
}

/// `[creator/]name[:version]`; creator defaults to the applier, version to `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub creator: String,
    pub name: String,
    pub version: String,
}

impl ImageRef {
    pub fn parse(image: &str, default_creator: &str) -> Result<ImageRef, String> {
        let image = image.trim();
        let (creator, rest) = match image.split_once('/') {
            Some((c, r)) => (c, r),
            None => (default_creator, image),
        };
        let (name, version) = match rest.rsplit_once(':') {
            Some((n, v)) => (n, v),
            None => (rest, "latest"),
        };
        if creator.is_empty() || name.is_empty() || version.is_empty() || name.contains('/') {
            return Err(format!("image {image:?} is not [creator/]name[:version]"));
        }
        Ok(ImageRef {
            creator: creator.to_string(),
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.creator, self.name, self.version)
    }
}

/// What validation needs to know from outside: who applies, whether S3 is configured, and
/// the pipelines that pipeline-type tasks name (resolved by the caller; `None` = not found).
pub struct Context<'a> {
    pub creator: &'a str,
    pub files_enabled: bool,
    /// image as written → the resolved identity (`creator/name:version`) and its definition.
    pub children: &'a HashMap<String, Option<(ImageRef, PipelineDef)>>,
}

impl PipelineDef {
    pub fn identity(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// The images of pipeline-type tasks (what the caller resolves for [`Context`]).
    pub fn child_images(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|t| t.kind == "pipeline" && !t.image.trim().is_empty())
            .map(|t| t.image.clone())
            .collect()
    }

    /// The types of the pipeline's outputs, as far as they can be told from this definition
    /// alone (a pipeline-type task's outputs count as their declared type, or env).
    pub fn output_types(&self) -> BTreeMap<String, ValueType> {
        let task_outputs = self.task_output_types(&HashMap::new(), "");
        self.outputs
            .iter()
            .map(|o| {
                let t = value_type(&o.value, &self.inputs, &self.contexts, &task_outputs);
                (o.name.clone(), t)
            })
            .collect()
    }

    fn task_output_types(
        &self,
        children: &HashMap<String, Option<(ImageRef, PipelineDef)>>,
        _creator: &str,
    ) -> HashMap<String, HashMap<String, ValueType>> {
        self.tasks
            .iter()
            .map(|t| {
                let child = children.get(&t.image).and_then(|c| c.as_ref());
                let outs = t
                    .outputs
                    .iter()
                    .map(|o| {
                        let ty = match (t.kind.as_str(), child) {
                            ("pipeline", Some((_, def))) => def
                                .output_types()
                                .get(&o.value)
                                .copied()
                                .unwrap_or(o.kind.unwrap_or_default()),
                            _ => o.kind.unwrap_or_default(),
                        };
                        (o.name.clone(), ty)
                    })
                    .collect();
                (t.alias.clone(), outs)
            })
            .collect()
    }

    /// Every rule of SPEC §5.2. The error starts with `pipeline NAME:VERSION:` and names the
    /// task and field at fault.
    pub fn validate(&self, ctx: &Context<'_>) -> Result<Dag, String> {
        check_name("pipeline name", &self.name)?;
        let p = |m: String| format!("pipeline {}: {m}", self.identity());
        if self.version.trim().is_empty() {
            return Err(format!("pipeline {}: version is empty", self.name));
        }
        super::check_version("version", &self.version)
            .map_err(|e| format!("pipeline {}: {e}", self.name))?;
        if self.version == "latest" {
            return Err(format!(
                "pipeline {}: version \"latest\" is reserved (it always points at the most recently applied version)",
                self.name
            ));
        }
        if self.tasks.is_empty() {
            return Err(p("no tasks".into()));
        }
        let params = |what: &str, list: &[Param]| -> Result<BTreeMap<String, ValueType>, String> {
            let mut m = BTreeMap::new();
            for i in list {
                check_name(&format!("{what} name"), &i.name).map_err(p)?;
                if m.insert(i.name.clone(), i.kind).is_some() {
                    return Err(p(format!("{what} {:?} is declared twice", i.name)));
                }
                if i.kind == ValueType::File && !ctx.files_enabled {
                    return Err(p(format!("{what} {:?}: {FILES_DISABLED}", i.name)));
                }
            }
            Ok(m)
        };
        let inputs = params("input", &self.inputs)?;
        let contexts = params("context", &self.contexts)?;

        let mut aliases = BTreeSet::new();
        for t in &self.tasks {
            check_name("task alias", &t.alias).map_err(p)?;
            if !aliases.insert(t.alias.clone()) {
                return Err(p(format!("duplicate task alias {:?}", t.alias)));
            }
        }
        let nodes: Vec<(String, Vec<String>)> = self
            .dag
            .iter()
            .map(|n| (n.name.clone(), n.needs.clone()))
            .collect();
        let dag = Dag::build(&nodes, &aliases).map_err(p)?;
        let task_outputs = self.task_output_types(ctx.children, ctx.creator);

        for t in &self.tasks {
            let tp = |m: String| p(format!("task {:?}: {m}", t.alias));
            let Some(kind) = TaskKind::parse(&t.kind) else {
                return Err(tp(if t.kind.is_empty() {
                    "type is missing (expected os, docker, k8s or pipeline)".into()
                } else {
                    format!(
                        "unknown type {:?} (expected os, docker, k8s or pipeline)",
                        t.kind
                    )
                }));
            };
            if t.timeout == Some(0) {
                return Err(tp("timeout must be at least 1 second".into()));
            }
            if let Some(secs) = t.timeout.filter(|s| *s > MAX_TIMEOUT) {
                return Err(tp(format!(
                    "timeout {secs} is more than {MAX_TIMEOUT} seconds (7 days)"
                )));
            }
            if let Some(s) = &t.actuator_selector {
                if s.tags.is_empty() {
                    return Err(tp("actuatorSelector.tags is empty".into()));
                }
            }
            let ancestors = dag.ancestors(&t.alias);
            // every placeholder of the task: commands, and for pipeline tasks input values
            let mut templates: Vec<(String, &str)> = t
                .commands
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("commands[{i}]"), c.as_str()))
                .collect();
            templates.extend(
                t.inputs
                    .iter()
                    .map(|i| (format!("input {:?}", i.name), i.value.as_str())),
            );
            for (at, tpl) in &templates {
                let refs = placeholder::refs(tpl).map_err(|e| tp(format!("{at}: {e}")))?;
                for r in refs {
                    check_ref(&r, &inputs, &contexts, &task_outputs, Some(&ancestors))
                        .map_err(|e| tp(format!("{at}: {e}")))?;
                }
            }
            let mut out_names = BTreeSet::new();
            for o in &t.outputs {
                check_name("output name", &o.name).map_err(tp)?;
                if !out_names.insert(o.name.clone()) {
                    return Err(tp(format!("output {:?} is declared twice", o.name)));
                }
                if o.value.trim().is_empty() {
                    return Err(tp(format!("output {:?}: value is empty", o.name)));
                }
                if o.kind == Some(ValueType::File) && !ctx.files_enabled {
                    return Err(tp(format!("output {:?}: {FILES_DISABLED}", o.name)));
                }
                // a file output of a job task is a path in (or below) the work directory,
                // or `$VAR`; a pipeline-type task's names an output of its child
                if o.kind == Some(ValueType::File)
                    && t.kind != "pipeline"
                    && o.value.split('/').any(|s| s == "..")
                {
                    return Err(tp(format!(
                        "output {:?}: path {:?} leaves the work directory ('..' is not allowed)",
                        o.name, o.value
                    )));
                }
                if let Some(cx) = &o.set_to_context {
                    let ty = task_outputs
                        .get(&t.alias)
                        .and_then(|m| m.get(&o.name))
                        .copied()
                        .unwrap_or_default();
                    match contexts.get(cx) {
                        None => {
                            return Err(tp(format!(
                                "output {:?}: setToContext {cx:?} is not a declared context",
                                o.name
                            )))
                        }
                        Some(ct) if *ct != ty => {
                            return Err(tp(format!(
                                "output {:?}: setToContext {cx:?} is a {ct} context but the output is {ty}",
                                o.name
                            )))
                        }
                        _ => {}
                    }
                }
            }
            match kind {
                TaskKind::Os => {
                    if t.commands.is_empty() || t.commands.iter().all(|c| c.trim().is_empty()) {
                        return Err(tp("commands is empty".into()));
                    }
                }
                TaskKind::Docker | TaskKind::K8s => {
                    if t.image.trim().is_empty() {
                        return Err(tp("image is missing (a container image is required)".into()));
                    }
                    if t.commands.is_empty() || t.commands.iter().all(|c| c.trim().is_empty()) {
                        return Err(tp("commands is empty".into()));
                    }
                }
                TaskKind::Pipeline => {
                    if t.image.trim().is_empty() {
                        return Err(tp(
                            "image is missing (the pipeline to run, [creator/]name[:version])"
                                .into(),
                        ));
                    }
                    let wanted = ImageRef::parse(&t.image, ctx.creator).map_err(tp)?;
                    if wanted.creator == ctx.creator && wanted.name == self.name {
                        return Err(tp(format!("image {:?} is this pipeline itself", t.image)));
                    }
                    let Some(Some((resolved, child))) = ctx.children.get(&t.image) else {
                        return Err(tp(format!(
                            "image {:?}: pipeline {wanted} does not exist",
                            t.image
                        )));
                    };
                    let child_inputs: BTreeMap<&str, ValueType> = child
                        .inputs
                        .iter()
                        .map(|i| (i.name.as_str(), i.kind))
                        .collect();
                    for i in &t.inputs {
                        let Some(want) = child_inputs.get(i.name.as_str()) else {
                            return Err(tp(format!(
                                "input {:?} is not an input of pipeline {resolved}",
                                i.name
                            )));
                        };
                        let got = value_type(&i.value, &self.inputs, &self.contexts, &task_outputs);
                        if got != *want {
                            return Err(tp(format!(
                                "input {:?} is {want} in pipeline {resolved} but the value given is {got}",
                                i.name
                            )));
                        }
                    }
                    let child_outputs = child.output_types();
                    for o in &t.outputs {
                        let Some(ty) = child_outputs.get(&o.value) else {
                            return Err(tp(format!(
                                "output {:?}: {:?} is not an output of pipeline {resolved}",
                                o.name, o.value
                            )));
                        };
                        if let Some(k) = o.kind {
                            if k != *ty {
                                return Err(tp(format!(
                                    "output {:?} is declared {k} but output {:?} of pipeline {resolved} is {ty}",
                                    o.name, o.value
                                )));
                            }
                        }
                    }
                }
            }
        }

        let mut out_names = BTreeSet::new();
        for o in &self.outputs {
            check_name("pipeline output name", &o.name).map_err(p)?;
            if !out_names.insert(o.name.clone()) {
                return Err(p(format!("output {:?} is declared twice", o.name)));
            }
            let refs =
                placeholder::refs(&o.value).map_err(|e| p(format!("output {:?}: {e}", o.name)))?;
            for r in refs {
                check_ref(&r, &inputs, &contexts, &task_outputs, None)
                    .map_err(|e| p(format!("output {:?}: {e}", o.name)))?;
            }
        }
        Ok(dag)
    }
}

/// Checks that a reference names something declared; for task outputs, that the task runs
/// before (`ancestors`; `None` = at the end of the run, every task) and has that output.
fn check_ref(
    r: &Ref,
    inputs: &BTreeMap<String, ValueType>,
    contexts: &BTreeMap<String, ValueType>,
    task_outputs: &HashMap<String, HashMap<String, ValueType>>,
    ancestors: Option<&BTreeSet<String>>,
) -> Result<(), String> {
    match r {
        Ref::Input(n) if !inputs.contains_key(n) => {
            Err(format!("{r} names undeclared input {n:?}"))
        }
        Ref::Context(n) if !contexts.contains_key(n) => {
            Err(format!("{r} names undeclared context {n:?}"))
        }
        Ref::Output { task, name } => {
            let Some(outs) = task_outputs.get(task) else {
                return Err(format!("{r} names unknown task {task:?}"));
            };
            if let Some(a) = ancestors {
                if !a.contains(task) {
                    return Err(format!(
                        "{r}: task {task:?} does not run before this one (it is not an ancestor in the dag)"
                    ));
                }
            }
            if !outs.contains_key(name) {
                return Err(format!("{r}: task {task:?} has no output {name:?}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The type a value template carries: that of its single placeholder, or env for text.
fn value_type(
    template: &str,
    inputs: &[Param],
    contexts: &[Param],
    task_outputs: &HashMap<String, HashMap<String, ValueType>>,
) -> ValueType {
    match placeholder::sole_ref(template) {
        Some(Ref::Input(n)) => inputs
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.kind)
            .unwrap_or_default(),
        Some(Ref::Context(n)) => contexts
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.kind)
            .unwrap_or_default(),
        Some(Ref::Output { task, name }) => task_outputs
            .get(&task)
            .and_then(|m| m.get(&name))
            .copied()
            .unwrap_or_default(),
        None => ValueType::Env,
    }
}
