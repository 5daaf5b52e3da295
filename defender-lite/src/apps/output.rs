//! The report as a table for people: one row per port (the image's `EXPOSE` ports last),
//! then what identified each app, the files read, notes and problems. The CLI prints it;
//! JSON is the report serialized (its shape is documented in the module above).

use std::fmt::Write;

use relay::bundle::PortProtocol;

use super::Report;

/// The report as text, ending with a newline.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "image: {} ({})", report.image, report.image_kind);
    let _ = writeln!(out, "knowledge: {}", report.knowledge);
    match &report.command {
        Some(c) => {
            let from = if c.from == "cmd" {
                "--cmd"
            } else {
                "image Entrypoint + Cmd"
            };
            let _ = writeln!(out, "command: {} ({from})", c.argv.join(" "));
        }
        None => {
            let _ = writeln!(out, "command: none");
        }
    }
    out.push('\n');
    if report.apps.is_empty() {
        out.push_str("no known app found\n");
    }

    let mut rows: Vec<[String; 7]> = vec![[
        "APP".into(),
        "PORT".into(),
        "PROTO".into(),
        "ADDRESS".into(),
        "STATUS".into(),
        "LABEL".into(),
        "EVIDENCE".into(),
    ]];
    for app in &report.apps {
        if app.ports.is_empty() {
            rows.push([
                app.id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "none".into(),
                "-".into(),
                "no port known".into(),
            ]);
        }
        for p in &app.ports {
            let mut evidence = p.evidence.to_string();
            if let Some(c) = &p.condition {
                let _ = write!(evidence, " if {c}");
            }
            if let Some(c) = &p.context {
                let _ = write!(evidence, " in {c}");
            }
            if let Some(v) = &p.value {
                let _ = write!(evidence, " value {v:?}");
            }
            if let Some(by) = &p.overridden_by {
                let _ = write!(evidence, " (overridden by {by})");
            }
            if p.exposed {
                evidence.push_str(" [EXPOSE]");
            }
            rows.push([
                app.id.clone(),
                p.port.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                proto(p.protocol).into(),
                p.address.clone().unwrap_or_else(|| "-".into()),
                p.status.as_str().into(),
                p.label.clone().unwrap_or_else(|| "-".into()),
                evidence,
            ]);
        }
    }
    for e in &report.exposed {
        let who = if e.apps.is_empty() {
            "no app found listening on it".to_owned()
        } else {
            format!("listened on by {}", e.apps.join(", "))
        };
        rows.push([
            "(image)".into(),
            e.port.to_string(),
            proto(e.protocol).into(),
            "-".into(),
            "exposed".into(),
            "-".into(),
            format!("{} ({who})", e.evidence),
        ]);
    }
    if rows.len() > 1 {
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }

    for app in &report.apps {
        out.push('\n');
        let found: Vec<&str> = app.found.iter().map(|f| f.path.as_str()).collect();
        let _ = writeln!(out, "{} ({}): found {}", app.id, app.name, found.join(", "));
        if let Some(runs) = &app.runs {
            let _ = writeln!(out, "  runs: {}", runs.join(" "));
        }
        if app.configs.is_empty() {
            let _ = writeln!(out, "  configs: none found");
        } else {
            let _ = writeln!(out, "  configs: {}", app.configs.join(", "));
        }
        for note in &app.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        for problem in &app.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
    }
    if !report.problems.is_empty() {
        out.push('\n');
        for problem in &report.problems {
            let _ = writeln!(out, "problem: {problem}");
        }
    }
    out
}

fn proto(p: PortProtocol) -> &'static str {
    match p {
        PortProtocol::Tcp => "tcp",
        PortProtocol::Udp => "udp",
    }
}
