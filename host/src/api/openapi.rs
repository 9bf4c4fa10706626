//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations and the
//! types they exchange; served at `/v1/openapi.json`.

use utoipa::OpenApi;

use super::{executions, plugins, quarantine, sagas};

/// Every route of the API: (method, path). The router, the document and the test that
/// checks them against each other all start from this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("put", "/v1/plugins/{name}/{version}"),
    ("get", "/v1/plugins/{name}/{version}"),
    ("get", "/v1/plugins"),
    ("get", "/v1/plugins/{name}/state"),
    ("put", "/v1/sagas/{name}"),
    ("get", "/v1/sagas/{name}"),
    ("get", "/v1/sagas"),
    ("post", "/v1/sagas/{name}/executions"),
    ("get", "/v1/executions"),
    ("get", "/v1/executions/feed"),
    ("get", "/v1/executions/{id}"),
    ("get", "/v1/executions/{id}/events"),
    ("post", "/v1/executions/{id}/cancel"),
    ("post", "/v1/executions/{id}/resume"),
    ("get", "/v1/quarantine"),
];

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "sagahost", description = "A WebAssembly-plugin saga host: upload step plugins, define sagas, trigger and follow executions."),
    paths(
        plugins::upload, plugins::show, plugins::list, plugins::state,
        sagas::put, sagas::show, sagas::list,
        executions::trigger, executions::list, executions::feed, executions::show, executions::events,
        executions::cancel, executions::resume, quarantine::list,
    ),
    modifiers(&BearerAuth),
    tags((name = "plugins"), (name = "sagas"), (name = "executions"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Required only when the host is configured with tokens; none is required otherwise.
        openapi.security =
            Some(vec![SecurityRequirement::default(), SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}
