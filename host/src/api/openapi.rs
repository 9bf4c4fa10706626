//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations and the
//! types they exchange; served at `/v1/openapi.json`. Each handler lists the answers of its own
//! route; [`Conventions`] adds what every route shares and the rules the types check in code.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Header, Ref, RefOr};

use super::{backup, executions, export, plugins, quarantine, sagas, secrets, subscriptions, topics};
use crate::domain::DefinitionLimits;

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
    ("post", "/v1/executions/{id}/signals/{topic}"),
    ("post", "/v1/events/{topic}"),
    ("get", "/v1/events"),
    ("get", "/v1/quarantine"),
    ("get", "/v1/export"),
    ("get", "/v1/backup"),
    ("get", "/v1/secrets"),
    ("put", "/v1/secrets/{name}"),
    ("delete", "/v1/secrets/{name}"),
    ("get", "/v1/subscriptions"),
    ("put", "/v1/subscriptions/{name}"),
    ("get", "/v1/subscriptions/{name}"),
    ("delete", "/v1/subscriptions/{name}"),
    ("get", "/v1/subscriptions/{name}/dead-letters"),
    ("post", "/v1/subscriptions/{name}/dead-letters/redrive"),
];

/// The routes a client token opens (docs/api.md, "Tokens"); the others need the admin token.
const CLIENT_ROUTES: &[&str] = &[
    "/v1/sagas/{name}/executions",
    "/v1/executions",
    "/v1/executions/feed",
    "/v1/executions/{id}",
    "/v1/executions/{id}/events",
    "/v1/executions/{id}/signals/{topic}",
    "/v1/events/{topic}",
    "/v1/events",
];

/// The one route that never touches the store, so never answers 500 or 503.
const STORELESS_ROUTE: &str = "/v1/executions/feed";

/// Plugin, saga and step names (`domain::ids::check_name`).
const NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";
/// Plugin versions (`domain::ids::PluginVersion::parse`), at most 64 characters.
const VERSION_PATTERN: &str = r"^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}([-+][A-Za-z0-9.+-]*)?$";
/// Bounds of a retry policy's `multiplier` (`domain::definition`, fixed, not configurable).
const MULTIPLIER_RANGE: (f64, f64) = (1.0, 100.0);

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "sagahost", description = "A WebAssembly-plugin saga host: upload step plugins, define sagas, trigger and follow executions."),
    paths(
        plugins::upload, plugins::show, plugins::list, plugins::state,
        sagas::put, sagas::show, sagas::list,
        executions::trigger, executions::list, executions::feed, executions::show, executions::events,
        executions::cancel, executions::resume, executions::signal, quarantine::list, export::export, backup::backup,
        secrets::put, secrets::list, secrets::delete, topics::publish, topics::list,
        subscriptions::put, subscriptions::list, subscriptions::show, subscriptions::delete,
        subscriptions::dead_letters, subscriptions::redrive,
    ),
    modifiers(&Conventions),
    tags((name = "plugins"), (name = "sagas"), (name = "executions"), (name = "secrets"), (name = "events"), (name = "subscriptions"))
)]
pub struct ApiDoc;

/// What every route shares, said once here rather than on each handler: its token and the 401
/// when one is configured, the limits on every request's head and announced body
/// (`api::guard`), the 500 and 503 of any route that reads or writes the store; and the
/// rules of names, versions, ids and definitions, which the types check in code where utoipa
/// cannot see them.
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            ("admin", "the admin token (`--admin-token`): management routes, and every route"),
            ("client", "the client token (`--client-token`): triggering and reading executions"),
        ] {
            let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build();
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
        components.schemas.extend(schemas());
        openapi.security = None;
        for (path, item) in openapi.paths.paths.iter_mut() {
            let client = CLIENT_ROUTES.contains(&path.as_str());
            for op in operations(item) {
                // `{}` first: a host without tokens asks for none (docs/api.md, "Tokens").
                let mut security = vec![SecurityRequirement::default()];
                if client {
                    security.push(SecurityRequirement::new("client", Vec::<String>::new()));
                }
                security.push(SecurityRequirement::new("admin", Vec::<String>::new()));
                op.security = Some(security);
                let mut shared = vec![
                    ("401", "`unauthorized`: a token is configured and this one is missing or wrong"),
                    ("413", "`too_large`: a body announced (Content-Length) over the route's limit, refused unread"),
                    ("414", "`uri_too_long`: a request target over 8 KiB"),
                    ("431", "`headers_too_large`: a header section over 16 KiB"),
                ];
                if op.request_body.is_some() {
                    shared
                        .push(("408", "`request_timeout`: the body did not arrive in time (--body-read-timeout-secs)"));
                }
                if path != STORELESS_ROUTE {
                    shared.push(("500", "`internal`: a bug or unexpected failure; the cause is in the host's log"));
                    shared.push(("503", "`unavailable`: the store refuses writes or failed; see Retry-After"));
                }
                for (status, description) in shared {
                    op.responses.responses.entry(status.into()).or_insert_with(|| error_response(status, description));
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
}

fn error_response(status: &str, description: &str) -> RefOr<Response> {
    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let mut response = ResponseBuilder::new().description(description).content("application/json", body);
    let header = |description: &str| Header::builder().schema(string()).description(Some(description)).build();
    match status {
        "401" => response = response.header("WWW-Authenticate", header("`Bearer`")),
        "503" => response = response.header("Retry-After", header("seconds to wait: `1`")),
        _ => {}
    }
    response.build().into()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer(min: u64, max: u64, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
}

/// `schema` or null: every optional field of a definition may also be given as null.
fn nullable(schema: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    OneOfBuilder::new().item(schema).item(ObjectBuilder::new().schema_type(Type::Null)).into()
}

/// A list of outbound HTTP grants (docs/definitions.md).
fn grants(description: &str) -> ArrayBuilder {
    ArrayBuilder::new().items(string().description(Some("scheme://host[:port]"))).description(Some(description))
}

/// Closed objects: an unknown field is refused (400), so the document says so.
fn closed(object: ObjectBuilder) -> RefOr<Schema> {
    object.schema_type(Type::Object).additional_properties(Some(AdditionalProperties::FreeForm(false))).into()
}

/// The schemas whose rules live in code: ids and names (patched over what their derives say) and
/// the definition a client sends, which is looser than the stored `SagaDefinition` (defaults).
fn schemas() -> Vec<(String, RefOr<Schema>)> {
    let name = |what: &str| {
        string()
            .pattern(Some(NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(64))
            .description(Some(format!(
                "{what} name: 1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit"
            )))
            .examples(["payment"])
    };
    // The lookahead bounds the version to its 64 characters.
    let plugin_ref = format!("{}@(?=.{{1,64}}$){}", &NAME_PATTERN[..NAME_PATTERN.len() - 1], &VERSION_PATTERN[1..]);
    let l = DefinitionLimits::default();
    let retry = ObjectBuilder::new()
        .description(Some("a retry policy; a field left out takes the default policy's value"))
        .property("max_attempts", nullable(integer(1, l.max_attempts.into(), "attempts in all, the first included")))
        .property("initial_backoff_ms", nullable(integer(0, l.max_backoff_ms, "wait after the first failed attempt")))
        .property(
            "multiplier",
            nullable(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(MULTIPLIER_RANGE.0))
                    .maximum(Some(MULTIPLIER_RANGE.1))
                    .description(Some("factor applied to the wait after each further failed attempt")),
            ),
        )
        .property(
            "max_backoff_ms",
            nullable(integer(0, l.max_backoff_ms, "cap on any one wait, not less than initial_backoff_ms")),
        );
    let topics = ArrayBuilder::new()
        .items(Ref::from_schema_name("StepName"))
        .min_items(Some(1))
        .max_items(Some(16))
        .unique_items(true)
        .description(Some("topics that end the wait (the rule of names)"));
    let wait_for = ObjectBuilder::new()
        .description(Some("a wait step: parks until a signal on one of its topics, at most timeout_ms"))
        .property("topics", topics)
        .property("timeout_ms", integer(1, l.max_deadline_ms, "how long the wait may last, from its start"))
        .required("topics")
        .required("timeout_ms");
    let step = ObjectBuilder::new()
        .description(Some(
            "one step (docs/definitions.md): a plugin step (`plugin`) or a wait step (`wait_for`, with none of the plugin step's fields)",
        ))
        .property("name", Ref::from_schema_name("StepName"))
        .property("plugin", Ref::from_schema_name("PluginRef"))
        .property("wait_for", closed(wait_for))
        .property(
            "fail_on",
            ArrayBuilder::new()
                .items(Ref::from_schema_name("StepName"))
                .unique_items(true)
                .description(Some("wait steps only: topics of wait_for that fail the step instead of completing it")),
        )
        .property(
            "compensation",
            ObjectBuilder::new()
                .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                .pattern(Some(plugin_ref.clone()))
                .description(Some("name@version whose compensate undoes the step; absent: `plugin`; null: none")),
        )
        .property("timeout_ms", nullable(integer(1, l.max_timeout_ms, "per-attempt time limit; default 30000")))
        .property("retry", nullable(Ref::from_schema_name("RetryRequest")))
        .property("compensation_retry", nullable(Ref::from_schema_name("RetryRequest")))
        .property("on_failure", nullable(Ref::from_schema_name("OnFailure")))
        .property("allow_http", grants("origins `execute` may call over HTTP: scheme://host[:port], a leading *. for subdomains; none by default"))
        .property(
            "compensate_allow_http",
            nullable(grants("origins `compensate` may call; absent or null: the same as allow_http")),
        )
        .property(
            "config",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::RefOr(string().max_length(Some(16 << 10)).into())))
                .max_properties(Some(64))
                .description(Some("named values the step's plugins read through wasi:config/store (not secret)")),
        )
        .property(
            "secrets",
            ArrayBuilder::new()
                .items(string().min_length(Some(1)).max_length(Some(128)).pattern(Some(r"^[A-Za-z0-9_.-]+$")))
                .max_items(Some(64))
                .unique_items(true)
                .description(Some(
                    "names of stored secrets (PUT /v1/secrets/{name}) the step's plugins read through \
                     wasi:config/store; each must be stored when the definition is, and must not also be a config name",
                )),
        )
        .required("name");
    let steps = ArrayBuilder::new()
        .items(Ref::from_schema_name("StepRequest"))
        .min_items(Some(1))
        .max_items(Some(l.max_steps))
        .description(Some("run in this order; at most --max-steps (default shown)"));
    let definition = ObjectBuilder::new()
        .description(Some("a saga definition as sent (docs/definitions.md); the host fills in every default"))
        .property("deadline_ms", nullable(integer(1, l.max_deadline_ms, "bound on the whole execution")))
        .property("steps", steps)
        .property(
            "triggers",
            ArrayBuilder::new()
                .items(closed(
                    ObjectBuilder::new()
                        .property("topic", Ref::from_schema_name("StepName"))
                        .property(
                            "key",
                            string().min_length(Some(1)).max_length(Some(256)).description(Some(
                                "dot-separated path into the event's payload: the execution's business key",
                            )),
                        )
                        .required("topic")
                        .required("key"),
                ))
                .max_items(Some(16))
                .description(Some("events that start an execution, one per saga and key (docs/topics.md)")),
        )
        .required("steps");
    vec![
        ("SagaName".into(), name("saga").into()),
        ("PluginName".into(), name("plugin").into()),
        ("StepName".into(), name("step").into()),
        (
            "PluginVersion".into(),
            string()
                .pattern(Some(VERSION_PATTERN))
                .max_length(Some(64))
                .description(Some("semver: MAJOR.MINOR.PATCH, optional -pre and +build"))
                .examples(["1.0.0"])
                .into(),
        ),
        (
            "PluginRef".into(),
            string()
                .pattern(Some(plugin_ref))
                .description(Some("a plugin reference, name@version"))
                .examples(["payment@1.0.0"])
                .into(),
        ),
        (
            "ExecutionId".into(),
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .description(Some("a UUIDv7; ids sort by creation time"))
                .into(),
        ),
        (
            "WasmComponent".into(),
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .description(Some("a WebAssembly component built for wasm32-wasip2"))
                .into(),
        ),
        ("RetryRequest".into(), closed(retry)),
        ("StepRequest".into(), closed(step)),
        ("DefinitionRequest".into(), closed(definition)),
    ]
}
