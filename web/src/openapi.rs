//! The OpenAPI 3.1 document of the API (`GET /api/openapi.json`), generated from the
//! handlers' `#[utoipa::path]` annotations and the wire types of `proto`. Every answer is the
//! envelope `{status, msg, data}`; failures carry `data: null` ([`Failure`]).

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// A failed request's envelope: the HTTP status again, the reason, no data.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
pub struct Failure {
    /// The HTTP status code.
    status: u16,
    /// What went wrong, naming the field or object.
    msg: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    data: Option<()>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A login token from POST /api/user/login (`eoctl login`)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventops",
        description = "Events in, triggers match, pipelines run on SSH hosts, tunnel agents, \
                       Docker and Kubernetes. Every answer is the envelope {status, msg, data}."
    ),
    paths(
        crate::api::healthz,
        crate::api::readyz,
        crate::api::cluster,
        document,
        crate::metrics::scrape,
        crate::dialer::connect,
        crate::relay::relay,
        crate::api::register,
        crate::api::login,
        crate::api::me,
        crate::api::logout_all,
        crate::api::change_password,
        crate::api::apply_actuator,
        crate::api::list_actuators,
        crate::api::get_actuator,
        crate::api::delete_actuator,
        crate::api::apply_pipeline,
        crate::api::list_pipelines,
        crate::api::get_pipeline_latest,
        crate::api::get_pipeline,
        crate::api::delete_pipeline,
        crate::api::apply_trigger,
        crate::api::list_triggers,
        crate::api::get_trigger,
        crate::api::delete_trigger,
        crate::api::send_event,
        crate::api::get_event,
        crate::api::callback,
        crate::api::list_runs,
        crate::api::get_run,
        crate::api::cancel_run,
        crate::api::task_log,
        crate::api::task_file,
        crate::api::upload_file,
        crate::fanout::list_machines,
        crate::fanout::create_task,
        crate::fanout::list_tasks,
    ),
    components(schemas(Failure)),
    modifiers(&Security),
    tags(
        (name = "health"), (name = "users"), (name = "actuators"), (name = "pipelines"),
        (name = "triggers"), (name = "events"), (name = "runs"), (name = "files"),
        (name = "fan-out"), (name = "tunnel"), (name = "meta"),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        doc
    })
}

/// This document (not wrapped in the envelope: it is read by tools).
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_methods(doc: &serde_json::Value, path: &str) -> Vec<String> {
        doc["paths"][path]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every registered route is in the document, and the document names no route that is
    /// not registered (a trailing `/` variant is the same route).
    #[test]
    fn the_document_covers_every_route_and_only_them() {
        let doc = serde_json::to_value(spec()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let norm = |p: &str| {
            if p.len() > 1 {
                p.trim_end_matches('/').to_string()
            } else {
                p.to_string()
            }
        };
        let mut missing = Vec::new();
        for (method, path) in crate::api::ROUTES {
            if !path_methods(&doc, &norm(path)).contains(&method.to_string()) {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        let registered: std::collections::BTreeSet<(String, String)> = crate::api::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), norm(p)))
            .collect();
        let mut extra = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if !registered.contains(&(method.clone(), path.clone())) {
                    extra.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        assert!(extra.is_empty(), "documented but not registered: {extra:?}");
    }

    /// Every response is described, with the envelope as its body (JSON answers).
    #[test]
    fn every_answer_is_documented_with_its_envelope() {
        let doc = serde_json::to_value(spec()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path}");
                for (code, r) in responses {
                    assert!(
                        r["description"].as_str().is_some_and(|d| !d.is_empty()),
                        "{method} {path} {code}"
                    );
                }
                if path != "/api/dialer/connect" && path != "/api/cluster/relay" {
                    assert!(responses.contains_key("200") || responses.contains_key("201"));
                }
            }
        }
        let failure = &doc["components"]["schemas"]["Failure"];
        assert!(failure["properties"]["msg"].is_object(), "{failure}");
        assert!(doc["components"]["securitySchemes"]["token"].is_object());
    }
}
