//! Given events → when the host decides or an outcome arrives → then these events.

use serde_json::{Value, json};

use super::decide::{cancel, resume, step_input};
use super::definition::{DefinitionLimits, parse_definition};
use super::*;

const T0: u64 = 1_000_000;

fn def(json: Value) -> SagaDefinition {
    parse_definition(json.to_string().as_bytes(), &DefinitionLimits::default(), |_| true).unwrap()
}

fn four_steps() -> SagaDefinition {
    def(json!({"steps": [
        {"name": "one", "plugin": "p@1.0.0"},
        {"name": "two", "plugin": "p@1.0.0"},
        {"name": "three", "plugin": "p@1.0.0", "compensation": "undo@1.0.0"},
        {"name": "four", "plugin": "p@1.0.0", "retry": {"max_attempts": 2, "initial_backoff_ms": 100}},
    ]}))
}

fn started(deadline: Option<u64>) -> Event {
    Event::ExecutionStarted {
        saga: SagaName::parse("s").unwrap(),
        definition_version: 1,
        input: json!({"n": 1}),
        deadline_unix_ms: deadline,
        idempotency_key: None,
        key: None,
    }
}

fn given(events: Vec<Event>) -> Execution {
    let id = ExecutionId::new();
    let records: Vec<EventRecord> =
        events.into_iter().enumerate().map(|(i, event)| EventRecord { seq: i as u64 + 1, at: T0, event }).collect();
    Execution::fold(id, &records).unwrap()
}

fn step(n: &str) -> StepName {
    StepName::parse(n).unwrap()
}

/// Drives an execution to its end with a simulated clock: the pure core of the orchestrator.
fn run(
    def: &SagaDefinition,
    mut exec: Execution,
    mut outcome: impl FnMut(&Invocation, &Value) -> Result<Value, StepFailure>,
) -> (Execution, Vec<Event>) {
    let mut now = T0;
    let mut log = Vec::new();
    let push = |exec: &mut Execution, events: Vec<Event>, now: u64, log: &mut Vec<Event>| {
        for r in exec.next_records(events, now) {
            exec.apply(&r).unwrap();
            log.push(r.event);
        }
    };
    for _ in 0..1_000 {
        match decide(&exec, def, now) {
            Next::Done => return (exec, log),
            Next::Record(events) => push(&mut exec, events, now, &mut log),
            Next::SleepUntil(t) => {
                assert!(t > now, "sleeping into the past");
                now = t;
            }
            Next::Invoke(inv) => {
                push(&mut exec, vec![inv.started_event()], now, &mut log);
                let input = step_input(&exec, def, &inv);
                let out = outcome(&inv, &input);
                let ev = record_outcome(&exec, def, &inv, out, now).expect("attempt in flight");
                push(&mut exec, vec![ev], now, &mut log);
            }
        }
    }
    panic!("execution did not finish");
}

fn types(log: &[Event]) -> Vec<String> {
    log.iter()
        .map(|e| match e {
            Event::StepStarted { step, attempt } => format!("start {step}#{attempt}"),
            Event::StepCompleted { step, .. } => format!("done {step}"),
            Event::StepFailed { step, retry_at_unix_ms, .. } => {
                format!("fail {step}{}", if retry_at_unix_ms.is_some() { " retry" } else { "" })
            }
            Event::CompensationStepStarted { step, attempt } => {
                format!("undo-start {step}#{attempt}")
            }
            Event::CompensationStepCompleted { step, .. } => format!("undone {step}"),
            Event::CompensationStepFailed { step, .. } => format!("undo-fail {step}"),
            other => other.type_name().to_string(),
        })
        .collect()
}

fn fail(kind: FailureKind) -> Result<Value, StepFailure> {
    Err(StepFailure::new(kind, "boom"))
}

#[test]
fn all_steps_succeed_in_order_with_results_flowing_forward() {
    let d = four_steps();
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, input| {
        if inv.step.as_str() == "three" {
            assert_eq!(input["results"]["one"], json!("r-one"));
            assert_eq!(input["results"]["two"], json!("r-two"));
            assert_eq!(input["input"], json!({"n": 1}));
        }
        Ok(json!(format!("r-{}", inv.step)))
    });
    assert_eq!(exec.status, ExecutionStatus::Completed);
    assert_eq!(
        types(&log),
        [
            "start one#1",
            "done one",
            "start two#1",
            "done two",
            "start three#1",
            "done three",
            "start four#1",
            "done four",
            "execution_completed"
        ]
    );
}

#[test]
fn fourth_step_failing_permanently_compensates_three_two_one_in_reverse() {
    let d = four_steps();
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, input| match (inv.side, inv.step.as_str()) {
        (Side::Execute, "four") => fail(FailureKind::Permanent),
        (Side::Compensate, name) => {
            assert_eq!(input["result"], json!(format!("r-{name}")));
            assert_eq!(input["reason"], json!("step four failed: boom"));
            Ok(json!("undone"))
        }
        (Side::Execute, name) => Ok(json!(format!("r-{name}"))),
    });
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    assert_eq!(
        types(&log)[6..],
        [
            "start four#1",
            "fail four",
            "compensation_started",
            "undo-start three#1",
            "undone three",
            "undo-start two#1",
            "undone two",
            "undo-start one#1",
            "undone one",
            "execution_compensated"
        ]
    );
}

#[test]
fn retryable_failures_back_off_then_give_up() {
    let d = four_steps();
    let mut times = Vec::new();
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, _| {
        if inv.step.as_str() == "four" && inv.side == Side::Execute {
            times.push(inv.attempt);
            return fail(FailureKind::Retryable);
        }
        Ok(json!(null))
    });
    assert_eq!(times, [1, 2], "max_attempts 2");
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    let t = types(&log);
    assert!(t.contains(&"fail four retry".to_string()) && t.contains(&"fail four".to_string()));
    // A step that answered "retryable" reported no effect: it is not compensated.
    assert!(!t.contains(&"undo-start four#1".to_string()));
}

#[test]
fn a_timed_out_step_has_unknown_outcome_and_is_compensated() {
    let d = def(json!({"steps": [
        {"name": "a", "plugin": "p@1.0.0"},
        {"name": "b", "plugin": "p@1.0.0", "retry": {"max_attempts": 1}},
    ]}));
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, _| match (inv.side, inv.step.as_str()) {
        (Side::Execute, "b") => fail(FailureKind::Timeout),
        _ => Ok(json!(1)),
    });
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    assert_eq!(types(&log)[4..7], ["compensation_started", "undo-start b#1", "undone b"]);
}

#[test]
fn continue_steps_fail_without_failing_the_saga() {
    let d = def(json!({"steps": [
        {"name": "book", "plugin": "p@1.0.0"},
        {"name": "notify", "plugin": "n@1.0.0", "compensation": null, "on_failure": "continue", "retry": {"max_attempts": 1}},
        {"name": "after", "plugin": "p@1.0.0"},
    ]}));
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, input| match inv.step.as_str() {
        "notify" => fail(FailureKind::Permanent),
        "after" => {
            assert!(input["results"].get("notify").is_none());
            Ok(json!(2))
        }
        _ => Ok(json!(1)),
    });
    assert_eq!(exec.status, ExecutionStatus::Completed);
    let view = ExecutionView::new(&exec, &d);
    assert_eq!(view.steps[1].status, view::StepStatus::Failed);
    assert!(types(&log).contains(&"fail notify".into()));
}

#[test]
fn compensation_that_gives_up_fails_the_execution_and_resume_retries_it() {
    let d = def(json!({"steps": [
        {"name": "a", "plugin": "p@1.0.0", "compensation_retry": {"max_attempts": 2, "initial_backoff_ms": 10}},
        {"name": "b", "plugin": "p@1.0.0"},
    ]}));
    let (exec, log) = run(&d, given(vec![started(None)]), |inv, _| match (inv.side, inv.step.as_str()) {
        (Side::Execute, "b") => fail(FailureKind::Permanent),
        (Side::Compensate, _) => fail(FailureKind::Retryable),
        _ => Ok(json!(1)),
    });
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(types(&log).last().unwrap(), "execution_failed");
    assert!(exec.failure_reason.as_deref().unwrap().contains("compensation of step a failed"));
    assert!(cancel(&exec).is_err());

    // Resume: a fresh budget of two attempts, continuing the attempt numbers.
    let mut exec = exec;
    for r in exec.next_records(resume(&exec).unwrap(), T0 + 10_000) {
        exec.apply(&r).unwrap();
    }
    assert_eq!(exec.status, ExecutionStatus::Compensating);
    let (exec, log) = run(&d, exec, |inv, _| {
        assert_eq!(inv.attempt, 3);
        Ok(json!("undone"))
    });
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    assert_eq!(types(&log), ["undo-start a#3", "undone a", "execution_compensated"]);
    assert!(resume(&exec).is_err());
}

#[test]
fn cancel_stops_going_forward_and_compensates_what_completed() {
    let d = four_steps();
    let exec = given(vec![
        started(None),
        Event::StepStarted { step: step("one"), attempt: 1 },
        Event::StepCompleted { step: step("one"), attempt: 1, result: json!(1), http: Vec::new(), signal: None },
    ]);
    assert_eq!(cancel(&exec).unwrap(), [Event::CancelRequested]);
    let mut exec = exec;
    for r in exec.next_records(vec![Event::CancelRequested], T0) {
        exec.apply(&r).unwrap();
    }
    assert_eq!(cancel(&exec).unwrap(), [], "a second cancel records nothing");
    let (exec, log) = run(&d, exec, |_, _| Ok(json!("ok")));
    assert_eq!(exec.status, ExecutionStatus::Compensated);
    assert_eq!(types(&log), ["compensation_started", "undo-start one#1", "undone one", "execution_compensated"]);
}

#[test]
fn a_last_step_completed_after_the_deadline_completes_the_saga() {
    let d = def(json!({"deadline_ms": 2000, "steps": [
        {"name": "a", "plugin": "p@1.0.0"},
        {"name": "b", "plugin": "p@1.0.0", "on_failure": "continue"},
    ]}));
    let done = |b: Event| {
        given(vec![
            started(Some(T0 + 2_000)),
            Event::StepStarted { step: step("a"), attempt: 1 },
            Event::StepCompleted { step: step("a"), attempt: 1, result: json!(1), http: Vec::new(), signal: None },
            Event::StepStarted { step: step("b"), attempt: 1 },
            b,
        ])
    };
    let completed =
        done(Event::StepCompleted { step: step("b"), attempt: 1, result: json!(2), http: Vec::new(), signal: None });
    assert_eq!(decide(&completed, &d, T0 + 2_001), Next::Record(vec![Event::ExecutionCompleted]));
    let gave_up = done(Event::StepFailed {
        step: step("b"),
        attempt: 1,
        error: StepFailure::new(FailureKind::Permanent, "no"),
        retry_at_unix_ms: None,
        http: Vec::new(),
        signal: None,
    });
    assert_eq!(decide(&gave_up, &d, T0 + 2_001), Next::Record(vec![Event::ExecutionCompleted]), "continue");
    let mut running = done(Event::StepStarted { step: step("b"), attempt: 2 });
    running.deadline_unix_ms = Some(T0 + 2_000);
    assert!(matches!(decide(&running, &d, T0 + 2_001), Next::Record(e) if e[0] == Event::DeadlineExceeded));
}

#[test]
fn deadline_bounds_backoff_and_starts_compensation() {
    let d = def(json!({"deadline_ms": 2000, "steps": [
        {"name": "a", "plugin": "p@1.0.0"},
        {"name": "b", "plugin": "p@1.0.0", "retry": {"max_attempts": 5, "initial_backoff_ms": 30000}},
    ]}));
    let exec = given(vec![
        started(Some(T0 + 2_000)),
        Event::StepStarted { step: step("a"), attempt: 1 },
        Event::StepCompleted { step: step("a"), attempt: 1, result: json!(1), http: Vec::new(), signal: None },
        Event::StepStarted { step: step("b"), attempt: 1 },
        Event::StepFailed {
            step: step("b"),
            attempt: 1,
            error: StepFailure::new(FailureKind::Retryable, "later"),
            retry_at_unix_ms: Some(T0 + 30_000),
            http: Vec::new(),
            signal: None,
        },
    ]);
    assert_eq!(decide(&exec, &d, T0 + 5), Next::SleepUntil(T0 + 2_000), "wake at the deadline, not the retry");
    assert_eq!(
        decide(&exec, &d, T0 + 2_000),
        Next::Record(vec![Event::DeadlineExceeded, Event::CompensationStarted { reason: "deadline exceeded".into() }])
    );
}

#[test]
fn an_attempt_without_outcome_runs_again_with_the_next_number_and_same_key() {
    let d = four_steps();
    let exec = given(vec![started(None), Event::StepStarted { step: step("one"), attempt: 1 }]);
    let Next::Invoke(inv) = decide(&exec, &d, T0) else { panic!() };
    assert_eq!((inv.step.as_str(), inv.attempt), ("one", 2));
    assert_eq!(inv.idempotency_key(&exec), format!("{}/one", exec.id));
}

#[test]
fn an_outcome_for_an_attempt_no_longer_in_flight_is_not_recorded() {
    let d = four_steps();
    let exec = given(vec![
        started(None),
        Event::StepStarted { step: step("one"), attempt: 1 },
        Event::StepCompleted { step: step("one"), attempt: 1, result: json!(1), http: Vec::new(), signal: None },
    ]);
    let inv = Invocation { side: Side::Execute, index: 0, step: step("one"), attempt: 1 };
    assert_eq!(record_outcome(&exec, &d, &inv, Ok(json!(2)), T0), None);
}

#[test]
fn a_step_that_never_started_is_never_compensated() {
    let d = four_steps();
    let exec = given(vec![started(None), Event::CompensationStarted { reason: "x".into() }]);
    assert_eq!(decide(&exec, &d, T0), Next::Record(vec![Event::ExecutionCompensated]));
    let view = ExecutionView::new(&exec, &d);
    assert!(view.steps.iter().all(|s| s.status == view::StepStatus::Skipped));
}

#[test]
fn folding_rejects_gaps_and_foreign_first_events() {
    let id = ExecutionId::new();
    let gap = [
        EventRecord { seq: 1, at: 0, event: started(None) },
        EventRecord { seq: 3, at: 0, event: Event::ExecutionCompleted },
    ];
    assert!(Execution::fold(id, &gap).is_err());
    assert!(Execution::fold(id, &[EventRecord { seq: 1, at: 0, event: Event::ExecutionCompleted }]).is_err());
}

#[test]
fn an_attempt_in_flight_in_a_shared_store_is_taken_over_only_after_its_lease() {
    use super::decide::{InFlight, LEASE_GRACE_MS, decide_with};
    let d = four_steps();
    let exec = given(vec![started(None), Event::StepStarted { step: step("one"), attempt: 1 }]);
    let lease_end = T0 + d.steps[0].timeout_ms + LEASE_GRACE_MS;
    assert_eq!(decide_with(&exec, &d, T0 + 5, InFlight::Leased), Next::SleepUntil(lease_end));
    let Next::Invoke(inv) = decide_with(&exec, &d, lease_end, InFlight::Leased) else { panic!() };
    assert_eq!(inv.attempt, 2);
}

mod waits {
    use super::*;
    use crate::domain::decide::{CommandError, MAX_PENDING_SIGNALS, signal};

    /// pay → await (CreditReserved | CreditLimitExceeded, the latter failing it) → ship.
    fn awaiting() -> SagaDefinition {
        def(json!({"steps": [
            {"name": "pay", "plugin": "p@1.0.0"},
            {"name": "await_credit", "wait_for": {"topics": ["CreditReserved", "CreditLimitExceeded"], "timeout_ms": 60_000},
             "fail_on": ["CreditLimitExceeded"]},
            {"name": "ship", "plugin": "p@1.0.0"},
        ]}))
    }

    /// Applies `events` at `at`.
    fn then(exec: &mut Execution, events: Vec<Event>, at: u64) {
        for r in exec.next_records(events, at) {
            exec.apply(&r).unwrap();
        }
    }

    fn paid() -> Execution {
        given(vec![
            started(None),
            Event::StepStarted { step: step("pay"), attempt: 1 },
            Event::StepCompleted { step: step("pay"), attempt: 1, result: json!(1), http: Vec::new(), signal: None },
        ])
    }

    fn signal_now(exec: &mut Execution, d: &SagaDefinition, topic: &str, payload: Value, at: u64) {
        let events = signal(exec, d, topic, payload, None).unwrap();
        then(exec, events, at);
    }

    #[test]
    fn a_wait_starts_parks_until_its_timeout_and_a_signal_completes_it_with_topic_and_payload() {
        let d = awaiting();
        let mut exec = paid();
        let Next::Record(events) = decide(&exec, &d, T0) else { panic!("the wait starts") };
        assert_eq!(events, [Event::StepStarted { step: step("await_credit"), attempt: 1 }]);
        then(&mut exec, events, T0);
        assert_eq!(decide(&exec, &d, T0 + 5), Next::SleepUntil(T0 + 60_000), "parks until its timeout");

        signal_now(&mut exec, &d, "CreditReserved", json!({"customer": "c-1"}), T0 + 10);
        let seq = exec.version;
        let Next::Record(events) = decide(&exec, &d, T0 + 10) else { panic!("the signal ends the wait") };
        assert_eq!(
            events,
            [Event::StepCompleted {
                step: step("await_credit"),
                attempt: 1,
                result: json!({"topic": "CreditReserved", "payload": {"customer": "c-1"}}),
                http: Vec::new(),
                signal: Some(seq),
            }]
        );
        then(&mut exec, events, T0 + 10);
        assert!(exec.signals[0].taken);
        let Next::Invoke(inv) = decide(&exec, &d, T0 + 10) else { panic!("ship runs next") };
        assert_eq!(step_input(&exec, &d, &inv)["results"]["await_credit"]["topic"], "CreditReserved");
    }

    #[test]
    fn a_signal_that_arrives_before_its_wait_is_kept_until_the_wait_takes_it() {
        let d = awaiting();
        let mut exec = given(vec![started(None), Event::StepStarted { step: step("pay"), attempt: 1 }]);
        signal_now(&mut exec, &d, "CreditLimitExceeded", json!({"limit": 100}), T0);
        let early = exec.version;
        then(
            &mut exec,
            vec![Event::StepCompleted {
                step: step("pay"),
                attempt: 1,
                result: json!(1),
                http: Vec::new(),
                signal: None,
            }],
            T0 + 1,
        );
        then(&mut exec, vec![Event::StepStarted { step: step("await_credit"), attempt: 1 }], T0 + 2);
        let Next::Record(events) = decide(&exec, &d, T0 + 2) else { panic!("taken at once") };
        let [Event::StepFailed { error, signal, retry_at_unix_ms: None, .. }] = events.as_slice() else {
            panic!("fail_on fails the step: {events:?}")
        };
        assert_eq!((error.kind, *signal), (FailureKind::Permanent, Some(early)));
        assert!(error.message.contains("CreditLimitExceeded"), "{}", error.message);
        then(&mut exec, events, T0 + 2);
        let Next::Record(events) = decide(&exec, &d, T0 + 2) else { panic!("compensation starts") };
        assert!(matches!(&events[0], Event::CompensationStarted { reason } if reason.contains("await_credit")));
    }

    #[test]
    fn a_wait_past_its_timeout_fails_and_the_saga_compensates() {
        let d = awaiting();
        let mut exec = paid();
        then(&mut exec, vec![Event::StepStarted { step: step("await_credit"), attempt: 1 }], T0);
        let Next::Record(events) = decide(&exec, &d, T0 + 60_000) else { panic!("timed out") };
        let [Event::StepFailed { error, signal: None, .. }] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(error.kind, FailureKind::Timeout);
        then(&mut exec, events, T0 + 60_000);
        // The wait has nothing to undo; pay is compensated.
        let (exec, log) = run(&d, exec, |_, _| Ok(json!("undone")));
        assert_eq!(exec.status, ExecutionStatus::Compensated);
        assert!(
            log.iter()
                .all(|e| !matches!(e, Event::CompensationStepStarted { step: s, .. } if s.as_str() == "await_credit"))
        );
        assert!(
            log.iter().any(|e| matches!(e, Event::CompensationStepCompleted { step: s, .. } if s.as_str() == "pay"))
        );
    }

    #[test]
    fn each_signal_is_taken_once_in_order_and_the_deadline_still_applies() {
        let d = def(json!({"deadline_ms": 5_000, "steps": [
            {"name": "first", "wait_for": {"topics": ["Go"], "timeout_ms": 60_000}},
            {"name": "second", "wait_for": {"topics": ["Go"], "timeout_ms": 60_000}},
        ]}));
        let mut exec = given(vec![started(Some(T0 + 5_000))]);
        signal_now(&mut exec, &d, "Go", json!(1), T0);
        signal_now(&mut exec, &d, "Go", json!(2), T0);
        let (exec, _) = run(&d, exec, |_, _| unreachable!("no plugin runs"));
        assert_eq!(exec.status, ExecutionStatus::Completed);
        let results: Vec<_> = ["first", "second"]
            .iter()
            .map(|s| exec.step(&step(s)).unwrap().execute.result().unwrap()["payload"].clone())
            .collect();
        assert_eq!(results, [json!(1), json!(2)]);

        let mut late = given(vec![started(Some(T0 + 5_000))]);
        then(&mut late, vec![Event::StepStarted { step: step("first"), attempt: 1 }], T0);
        assert_eq!(decide(&late, &d, T0), Next::SleepUntil(T0 + 5_000), "the deadline comes before the timeout");
        assert!(matches!(decide(&late, &d, T0 + 5_000), Next::Record(e) if e[0] == Event::DeadlineExceeded));
    }

    #[test]
    fn signals_are_refused_for_unknown_topics_ended_executions_a_full_backlog_and_repeated_ids() {
        let d = awaiting();
        let mut exec = paid();
        assert!(matches!(signal(&exec, &d, "Other", json!(1), None), Err(CommandError::UnknownTopic(_))));
        let once = signal(&exec, &d, "CreditReserved", json!(1), Some("k-1".into())).unwrap();
        then(&mut exec, once, T0);
        assert_eq!(signal(&exec, &d, "CreditReserved", json!(1), Some("k-1".into())).unwrap(), [], "already received");
        for _ in 1..MAX_PENDING_SIGNALS {
            signal_now(&mut exec, &d, "CreditReserved", json!(1), T0);
        }
        assert!(matches!(signal(&exec, &d, "CreditReserved", json!(1), None), Err(CommandError::TooManySignals(_))));
        then(&mut exec, vec![Event::CancelRequested, Event::CompensationStarted { reason: "x".into() }], T0);
        assert!(matches!(signal(&exec, &d, "CreditReserved", json!(1), None), Err(CommandError::WrongStatus(..))));
    }
}
