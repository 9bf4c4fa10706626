//! Property tests over the two parsers hostile input reaches first: saga definitions and
//! plugin uploads. Whatever arrives, the answer is a value or an explained refusal — never
//! a panic.

use proptest::prelude::*;
use sagahost::domain::definition::{DefinitionError, DefinitionLimits, parse_definition};
use sagahost::runtime::{Limits, Runtime};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = env!("SAGAHOST_PLUGIN_DIR");

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_-]{0,8}", ".{0,12}", Just(String::new())]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-5i64..100_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::Null),
        Just(json!("12")),
    ]
}

fn step() -> impl Strategy<Value = Value> {
    (
        name(),
        name(),
        proptest::option::of(name()),
        number(),
        number(),
        number(),
        proptest::option::of(number()),
        any::<bool>(),
    )
        .prop_map(|(n, plugin, comp, timeout, attempts, backoff, mult, cont)| {
            let mut s = json!({
                "name": n,
                "plugin": format!("{plugin}@1.0.0"),
                "timeout_ms": timeout,
                "retry": {"max_attempts": attempts, "initial_backoff_ms": backoff},
            });
            if let Some(c) = comp {
                s["compensation"] = json!(format!("{c}@1.0.0"));
            }
            if let Some(m) = mult {
                s["retry"]["multiplier"] = m;
            }
            if cont {
                s["on_failure"] = json!("continue");
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_or_are_refused_as_malformed(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let r = parse_definition(&bytes, &DefinitionLimits::default(), |_| true);
        prop_assert!(matches!(r, Err(DefinitionError::Malformed(_)) | Err(DefinitionError::Invalid(_)) | Ok(_)));
    }

    #[test]
    fn accepted_definitions_keep_every_rule(steps in proptest::collection::vec(step(), 0..6), deadline in number()) {
        let doc = json!({"deadline_ms": deadline, "steps": steps});
        let limits = DefinitionLimits::default();
        match parse_definition(doc.to_string().as_bytes(), &limits, |r| r.name.as_str() != "missing") {
            Ok(d) => {
                prop_assert!(!d.steps.is_empty() && d.steps.len() <= limits.max_steps);
                let mut names: Vec<_> = d.steps.iter().map(|s| s.name.as_str()).collect();
                names.sort();
                names.dedup();
                prop_assert_eq!(names.len(), d.steps.len());
                for s in &d.steps {
                    prop_assert!(s.timeout_ms >= 1 && s.timeout_ms <= limits.max_timeout_ms);
                    prop_assert!(s.retry.max_attempts >= 1 && s.retry.multiplier >= 1.0);
                    // A plugin step names an uploaded plugin; a wait step names none.
                    prop_assert!(s.plugin.is_some() != s.wait_for.is_some());
                    prop_assert!(s.plugin.as_ref().is_none_or(|p| p.name.as_str() != "missing"));
                }
            }
            Err(DefinitionError::Invalid(problems)) => prop_assert!(!problems.is_empty()),
            Err(DefinitionError::Malformed(m)) => prop_assert!(!m.is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Corrupted, truncated or spliced components are refused with a reason, never a panic.
    #[test]
    fn mangled_components_are_refused_or_valid(cut in 0usize..120_000, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let runtime = Runtime::new(Limits { max_instances: 2, ..Limits::default() }).unwrap();
        let mut bytes = std::fs::read(format!("{PLUGIN_DIR}/order.wasm")).unwrap();
        bytes.truncate(cut.max(8).min(bytes.len()));
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        if let Err(reason) = runtime.compile(&bytes) {
            prop_assert!(!reason.to_string().is_empty());
        }
    }
}
