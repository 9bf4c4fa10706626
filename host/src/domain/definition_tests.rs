//! Parsing and validation of definitions.

use super::*;

fn parse(json: &str) -> Result<SagaDefinition, DefinitionError> {
    parse_definition(json.as_bytes(), &DefinitionLimits::default(), |r| r.name.as_str() != "missing")
}

#[test]
fn defaults_are_filled_in() {
    let d = parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0"},{"name":"b","plugin":"p@1.0.0","compensation":null,"on_failure":"continue"}]}"#)
        .unwrap();
    assert_eq!(d.deadline_ms, None);
    assert_eq!(d.steps[0].compensation.as_ref().unwrap().to_string(), "p@1.0.0");
    assert_eq!(d.steps[0].retry, RetryPolicy::step_default());
    assert_eq!(d.steps[0].timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(d.steps[1].compensation, None);
    assert_eq!(d.steps[1].on_failure, OnFailure::Continue);
}

#[test]
fn every_problem_is_listed() {
    let err = parse(
        r#"{"deadline_ms":0,"steps":[
            {"name":"a","plugin":"missing@1.0.0","timeout_ms":-5,"retry":{"max_attempts":0,"multiplier":0.5}},
            {"name":"a","plugin":"nover"}]}"#,
    )
    .unwrap_err();
    let DefinitionError::Invalid(problems) = err else { panic!("{err:?}") };
    let all = problems.join("\n");
    for needle in [
        "deadline_ms",
        "steps[0].timeout_ms",
        "steps[0].retry.max_attempts",
        "steps[0].retry.multiplier",
        "missing@1.0.0 has not been uploaded",
        "steps[1].plugin",
        "\"a\" is used more than once",
    ] {
        assert!(all.contains(needle), "{needle:?} not in {all}");
    }
}

#[test]
fn retention_is_the_hosts_unless_the_saga_sets_one() {
    let one = r#"[{"name":"a","plugin":"p@1.0.0"}]"#;
    assert_eq!(parse(&format!(r#"{{"steps":{one}}}"#)).unwrap().retain_ms, None);
    assert_eq!(parse(&format!(r#"{{"retain_ms":120000,"steps":{one}}}"#)).unwrap().retain_ms, Some(120_000));
    for bad in ["0", "999", "-1", "315360000001", "1e400"] {
        let err = parse(&format!(r#"{{"retain_ms":{bad},"steps":{one}}}"#)).unwrap_err();
        assert!(err.to_string().contains("retain_ms") || matches!(err, DefinitionError::Malformed(_)), "{bad}: {err}");
    }
}

#[test]
fn malformed_documents_are_told_apart() {
    for bad in ["", "{", r#"{"steps":[{"name":"a","plugin":"p@1.0.0","tiemout_ms":1}]}"#, r#"{"steps":"x"}"#] {
        assert!(matches!(parse(bad), Err(DefinitionError::Malformed(_))), "{bad:?}");
    }
    assert!(matches!(parse(r#"{"steps":[]}"#), Err(DefinitionError::Invalid(_))));
}

#[test]
fn http_grants_are_parsed_and_compensation_defaults_to_execute() {
    let d = parse(
        r#"{"steps":[{"name":"a","plugin":"p@1.0.0","allow_http":["https://X.example.com","http://127.0.0.1:9400"]},
            {"name":"b","plugin":"p@1.0.0","allow_http":["https://a.example.com"],"compensate_allow_http":[]}]}"#,
    )
    .unwrap();
    let shown = |g: &[HttpGrant]| g.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(shown(d.steps[0].http_grants(false)), ["https://x.example.com", "http://127.0.0.1:9400"]);
    assert_eq!(shown(d.steps[0].http_grants(true)), shown(d.steps[0].http_grants(false)));
    assert!(d.steps[1].http_grants(true).is_empty());
    let stored = serde_json::to_value(&d.steps[0]).unwrap();
    assert_eq!(stored["allow_http"][0], "https://x.example.com");
    assert!(
        serde_json::to_value(&parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0"}]}"#).unwrap().steps[0])
            .unwrap()
            .get("allow_http")
            .is_none()
    );
    let err = parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","allow_http":["ftp://x.com"]}]}"#).unwrap_err();
    assert!(err.to_string().contains("steps[0].allow_http[0]"), "{err}");
}

#[test]
fn config_is_named_values() {
    let d =
        parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","config":{"gateway_url":"https://gw.example"}}]}"#).unwrap();
    assert_eq!(d.steps[0].config["gateway_url"], "https://gw.example");
    let err = parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","config":{"bad name":"x"}}]}"#).unwrap_err();
    assert!(err.to_string().contains("steps[0].config"), "{err}");
    assert!(matches!(
        parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","config":{"n":1}}]}"#),
        Err(DefinitionError::Malformed(_))
    ));
}

#[test]
fn secrets_are_distinct_names_apart_from_config() {
    let d = parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","secrets":["gateway_key","tls.key"]}]}"#).unwrap();
    assert_eq!(d.steps[0].secrets, ["gateway_key", "tls.key"]);
    assert!(parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0"}]}"#).unwrap().steps[0].secrets.is_empty());
    for (secrets, problem) in [
        (r#"["bad name"]"#, "steps[0].secrets[0]: name \"bad name\""),
        (r#"["k","k"]"#, "steps[0].secrets[1]: \"k\" is listed twice"),
        (r#"["url"]"#, "steps[0].secrets[0]: \"url\" is also a config name"),
        (&serde_json::to_string(&(0..65).map(|i| format!("s{i}")).collect::<Vec<_>>()).unwrap(), "at most 64 entries"),
    ] {
        let doc =
            format!(r#"{{"steps":[{{"name":"a","plugin":"p@1.0.0","config":{{"url":"x"}},"secrets":{secrets}}}]}}"#);
        let err = parse(&doc).unwrap_err();
        assert!(err.to_string().contains(problem), "{secrets}: {err}");
    }
    assert!(matches!(
        parse(r#"{"steps":[{"name":"a","plugin":"p@1.0.0","secrets":"gateway_key"}]}"#),
        Err(DefinitionError::Malformed(_))
    ));
}

#[test]
fn backoff_grows_and_is_capped() {
    let p = RetryPolicy { max_attempts: 10, initial_backoff_ms: 100, multiplier: 2.0, max_backoff_ms: 500 };
    let waits: Vec<u64> = (1..=5).map(|a| p.backoff_ms(a)).collect();
    assert_eq!(waits, [100, 200, 400, 500, 500]);
}

#[test]
fn a_document_that_is_not_an_object_is_named() {
    let step = r#"{"name":"a","plugin":"p@1.0.0"}"#;
    for (doc, what) in [
        (format!("[{step}]"), "an array"),
        ("[]".into(), "an array"),
        (format!("{step:?}"), "a string"),
        ("42".into(), "a number"),
        ("true".into(), "a boolean"),
        (" null ".into(), "null"),
    ] {
        let Err(DefinitionError::Invalid(problems)) = parse(&doc) else { panic!("{doc} accepted or malformed") };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("must be a JSON object") && problems[0].ends_with(what), "{problems:?}");
    }
}

#[test]
fn wait_steps_have_topics_a_timeout_and_none_of_a_plugin_steps_fields() {
    let d = parse(
        r#"{"steps":[{"name":"w","wait_for":{"topics":["Ok","No"],"timeout_ms":1000},"fail_on":["No"],"on_failure":"continue"}]}"#,
    )
    .unwrap();
    let s = &d.steps[0];
    assert_eq!((s.plugin.as_ref(), s.compensation.as_ref()), (None, None));
    assert_eq!(s.wait_for.as_ref().unwrap().topics, ["Ok", "No"]);
    assert_eq!((s.fail_on.as_slice(), s.on_failure), (&["No".to_owned()][..], OnFailure::Continue));
    assert!(d.plugins().is_empty());
    for (step, problem) in [
        (r#"{"name":"w"}"#, "steps[0]: a step needs a plugin (or a wait_for)"),
        (
            r#"{"name":"w","plugin":"p@1.0.0","wait_for":{"topics":["A"],"timeout_ms":1}}"#,
            "a plugin or a wait_for, not both",
        ),
        (r#"{"name":"w","wait_for":{"topics":[],"timeout_ms":1}}"#, "wait_for.topics has 1 to 16 topics, got 0"),
        (r#"{"name":"w","wait_for":{"topics":["A","A"],"timeout_ms":1}}"#, "topics[1]: \"A\" is listed twice"),
        (r#"{"name":"w","wait_for":{"topics":["bad topic"],"timeout_ms":1}}"#, "topics[0]: topic \"bad topic\""),
        (r#"{"name":"w","wait_for":{"topics":["A"],"timeout_ms":0}}"#, "wait_for.timeout_ms must be between 1 and"),
        (
            r#"{"name":"w","wait_for":{"topics":["A"],"timeout_ms":1},"fail_on":["B"]}"#,
            "fail_on[0]: \"B\" is not one of",
        ),
        (r#"{"name":"w","plugin":"p@1.0.0","fail_on":["B"]}"#, "only a wait step (wait_for) has fail_on"),
        (
            r#"{"name":"w","wait_for":{"topics":["A"],"timeout_ms":1},"compensation":null}"#,
            "steps[0].compensation: a wait step",
        ),
        (r#"{"name":"w","wait_for":{"topics":["A"],"timeout_ms":1},"retry":{}}"#, "steps[0].retry: a wait step"),
        (r#"{"name":"w","wait_for":{"topics":["A"],"timeout_ms":1},"secrets":["k"]}"#, "steps[0].secrets: a wait step"),
    ] {
        let err = parse(&format!(r#"{{"steps":[{step}]}}"#)).unwrap_err();
        assert!(err.to_string().contains(problem), "{step}: {err}");
    }
    assert!(matches!(
        parse(r#"{"steps":[{"name":"w","wait_for":{"topics":["A"],"timeout_ms":1,"key":"x"}}]}"#),
        Err(DefinitionError::Malformed(_))
    ));
}

#[test]
fn triggers_name_a_topic_once_and_a_key_path() {
    let d =
        parse(r#"{"triggers":[{"topic":"OrderCreated","key":"order.id"}],"steps":[{"name":"a","plugin":"p@1.0.0"}]}"#)
            .unwrap();
    assert_eq!(d.triggers[0].key, "order.id");
    for (triggers, problem) in [
        (r#"[{"topic":"bad topic","key":"k"}]"#, "triggers[0].topic: topic \"bad topic\""),
        (r#"[{"topic":"T","key":"a..b"}]"#, "triggers[0].key: \"a..b\" is not a path"),
        (r#"[{"topic":"T","key":"k"},{"topic":"T","key":"j"}]"#, "triggers[1].topic: \"T\" has a trigger already"),
    ] {
        let err =
            parse(&format!(r#"{{"triggers":{triggers},"steps":[{{"name":"a","plugin":"p@1.0.0"}}]}}"#)).unwrap_err();
        assert!(err.to_string().contains(problem), "{triggers}: {err}");
    }
    let many: Vec<String> = (0..17).map(|i| format!(r#"{{"topic":"T{i}","key":"k"}}"#)).collect();
    let err = parse(&format!(r#"{{"triggers":[{}],"steps":[{{"name":"a","plugin":"p@1.0.0"}}]}}"#, many.join(",")))
        .unwrap_err();
    assert!(err.to_string().contains("triggers has at most 16 entries"), "{err}");
}
