//! Human-readable output of the client commands: aligned tables and short summaries.

use serde_json::Value;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// A JSON value as a short cell.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
        }
    }
}

/// Milliseconds since the unix epoch as UTC `HH:MM:SS.mmm`.
pub fn time(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60, ms % 1000)
}

/// An execution: header lines and a table of its steps.
pub fn execution(e: &Value) -> String {
    let mut out = vec![
        format!("execution  {}", cell(&e["id"])),
        format!("saga       {} (definition v{})", cell(&e["saga"]), cell(&e["definition_version"])),
        format!("status     {}", cell(&e["status"])),
    ];
    if !e["compensation_reason"].is_null() {
        out.push(format!("reason     {}", cell(&e["compensation_reason"])));
    }
    if !e["failure_reason"].is_null() {
        out.push(format!("failure    {}", cell(&e["failure_reason"])));
    }
    let rows: Vec<Vec<String>> = e["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let error = match &s["error"] {
                Value::Null => "-".into(),
                err => format!("{}: {}", cell(&err["kind"]), cell(&err["message"])),
            };
            vec![
                cell(&s["name"]),
                cell(&s["status"]),
                cell(&s["attempts"]),
                cell(&s["result"]),
                error,
                cell(&s["compensation"]["result"]),
            ]
        })
        .collect();
    out.push(String::new());
    out.push(table(&["step", "status", "attempts", "result", "error", "compensation"], &rows));
    out.join("\n")
}

/// One event as a line.
pub fn event(e: &Value) -> String {
    let mut line = format!("{:>4}  {}  {}", cell(&e["seq"]), time(&e["at"]), cell(&e["type"]));
    if let Some(step) = e["step"].as_str() {
        line.push_str(&format!("  {step}#{}", cell(&e["attempt"])));
    }
    if !e["error"].is_null() && e.get("error").is_some() {
        line.push_str(&format!("  {}: {}", cell(&e["error"]["kind"]), cell(&e["error"]["message"])));
    }
    if let Some(r) = e["reason"].as_str() {
        line.push_str(&format!("  ({r})"));
    }
    line
}
