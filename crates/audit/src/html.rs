//! A verification report people can read and hand on: one self-contained HTML file (inline style,
//! no script, nothing fetched) with the verdict first, then per stream which code produced which
//! period, the findings with where each one is, and what the verdict rests on. It aggregates (runs
//! of batches, findings capped per kind by the verifier), so it stays small for any input size.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use teelog_core::verify::{EpochTrust, StreamInstance, TimelineEntry, TrustBasis};
use teelog_core::Report;

/// What the report says about how it was made.
#[derive(Debug, Clone, Default)]
pub struct ReportContext {
    /// The command and what it read, e.g. `teelog verify --store ./logs`.
    pub subject: String,
    /// The trust anchors and keys given, one line each (file names, pinned roots).
    pub anchors: Vec<String>,
    /// The policy's entries, one line each, if a policy was given.
    pub policy: Vec<String>,
    /// When the verification ran (RFC 3339).
    pub verified_at: String,
    /// The teelog version that made it.
    pub version: String,
}

/// `text` with the five characters HTML gives meaning to written as entities, and controls as
/// visible escapes: nothing from the input can become markup.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in teelog_core::display::escape_controls(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1b1f24;padding:0 1em}\
h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #d0d7de}\
h3{font-size:1.05em;margin:1.2em 0 .3em}.verdict{padding:.8em 1em;border-radius:6px;font-size:1.2em;font-weight:600}\
.ok{background:#dafbe1;border:1px solid #4ac26b}.fail{background:#ffebe9;border:1px solid #ff8182}\
table{border-collapse:collapse;width:100%;margin:.4em 0}td,th{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f6f8fa}code,.mono{font-family:ui-monospace,monospace;font-size:.92em;word-break:break-all}\
.bar{display:flex;height:1.4em;border:1px solid #d0d7de;border-radius:4px;overflow:hidden;margin:.3em 0}\
.bar span{display:block;min-width:2px;border-right:1px solid #fff}.change td{background:#fff8c5}.bad{color:#cf222e;font-weight:600}\
.muted{color:#57606a}";

/// Colours for the runs of one stream's bar, by version (repeating).
const COLOURS: [&str; 6] = ["#54aeff", "#4ac26b", "#d4a72c", "#c297ff", "#ff8182", "#6e7781"];

/// The report as one HTML document.
pub fn render(report: &Report, context: &ReportContext) -> String {
    let mut html = String::new();
    let listed = report.findings.len() as u64 + report.omitted_findings.values().sum::<u64>();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>teelog report: {verdict}</title><style>{STYLE}</style></head><body>",
        verdict = if report.ok { "OK" } else { "FAIL" }
    );
    let _ = write!(html, "<h1>teelog verification report</h1>");
    let counts = format!(
        "{} batches, {} records, {} duplicate lines, {} torn writes rewritten",
        report.batches, report.records, report.duplicates, report.torn_writes
    );
    if report.ok {
        let _ = write!(html, "<p class=\"verdict ok\" id=\"verdict\">OK: every batch verified, no gaps, chain intact. {counts}.</p>");
    } else {
        let _ =
            write!(html, "<p class=\"verdict fail\" id=\"verdict\">FAIL: {listed} findings. {counts}.</p>");
    }
    let _ = write!(
        html,
        "<p class=\"muted\">{} &middot; verified at {} by teelog {}</p>",
        esc(&context.subject),
        esc(&context.verified_at),
        esc(&context.version)
    );

    let mut streams: BTreeMap<&str, (Vec<&TimelineEntry>, Vec<&EpochTrust>, u64)> = BTreeMap::new();
    for run in report.timeline.iter().flatten() {
        streams.entry(&run.stream).or_default().0.push(run);
    }
    for epoch in &report.trust {
        streams.entry(&epoch.stream).or_default().1.push(epoch);
    }
    for finding in &report.findings {
        if let Some(stream) = &finding.stream {
            streams.entry(stream).or_default().2 += 1;
        }
    }
    let _ = write!(html, "<h2>Streams</h2>");
    if streams.is_empty() {
        let _ = write!(html, "<p>No stream has a batch that verified.</p>");
    }
    for (stream, (runs, epochs, findings)) in &streams {
        let _ = write!(html, "<h3>Stream <code>{}</code></h3>", esc(stream));
        let note = if *findings > 0 {
            format!("<span class=\"bad\">{findings} findings</span>")
        } else {
            "no findings".to_string()
        };
        // The instances are ordered by stream: a search finds the stream's, where a scan per
        // stream would cost streams x streams.
        let from = report.instances.partition_point(|i| *i.stream < **stream);
        let instances: Vec<&StreamInstance> =
            report.instances[from..].iter().take_while(|i| *i.stream == **stream).collect();
        let _ =
            write!(html, "<p>{} epochs in {} instances &middot; {note}</p>", epochs.len(), instances.len());
        render_instances(&mut html, &instances);
        render_runs(&mut html, runs);
        if !epochs.is_empty() {
            let _ = write!(html, "<table><tr><th>epoch</th><th>batches</th><th>platform</th><th>key</th><th>trust rests on</th></tr>");
            for epoch in epochs {
                let _ = write!(
                    html,
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                    esc(&epoch.epoch),
                    epoch.batches,
                    esc(&epoch.platform),
                    esc(&epoch.key_id),
                    basis_text(epoch.basis).to_string()
                        + if epoch.epoch_unsigned { "; the epoch is a seed-format thumbprint, which nothing signs" } else { "" }
                );
            }
            let _ = write!(html, "</table>");
        }
    }

    let _ = write!(html, "<h2 id=\"findings\">Findings</h2>");
    if report.findings.is_empty() {
        let _ = write!(html, "<p>None.</p>");
    } else {
        let _ = write!(html, "<table><tr><th>kind</th><th>stream</th><th>epoch</th><th>seq</th><th>record</th><th>detail</th></tr>");
        for f in &report.findings {
            let cell = |v: Option<String>| v.map(|v| esc(&v)).unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td class=\"bad\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.kind.name(),
                cell(f.stream.clone()),
                cell(f.epoch.clone()),
                cell(f.seq.map(|s| s.to_string())),
                cell(f.record_index.map(|i| i.to_string())),
                esc(&f.detail)
            );
        }
        let _ = write!(html, "</table>");
    }
    for (kind, count) in &report.omitted_findings {
        let _ = write!(
            html,
            "<p class=\"bad\">… and {count} more <code>{}</code> findings, not listed.</p>",
            kind.name()
        );
    }

    let _ = write!(html, "<h2>What the verdict rests on</h2><ul>");
    for anchor in &context.anchors {
        let _ = write!(html, "<li>{}</li>", esc(anchor));
    }
    let _ = write!(html, "</ul>");
    if context.policy.is_empty() {
        let _ = write!(html, "<p>No measurement policy was given: measurements are shown, not judged.</p>");
    } else {
        let _ = write!(html, "<p>Measurement policy:</p><ul>");
        for entry in &context.policy {
            let _ = write!(html, "<li class=\"mono\">{}</li>", esc(entry));
        }
        let _ = write!(html, "</ul>");
    }
    if report.dev_attested > 0 {
        let _ = write!(
            html,
            "<p class=\"bad\">{} batches are attested by a dev root: not hardware-backed.</p>",
            report.dev_attested
        );
    }
    if !report.unreferenced_documents.is_empty() {
        let _ = write!(
            html,
            "<p>{} attestation documents are named by no batch and prove nothing.</p>",
            report.unreferenced_documents.len()
        );
    }
    html.push_str("</body></html>\n");
    html
}

/// One stream's runs: a bar of periods by code version, then a table with a marked row wherever
/// the measurement changed (a new version was deployed).
/// The chains of one stream: each instance, where it starts, whether the auditor pinned it, and
/// its epochs in order.
fn render_instances(html: &mut String, instances: &[&StreamInstance]) {
    if instances.is_empty() {
        return;
    }
    let _ = write!(
        html,
        "<table><tr><th>instance</th><th>starts</th><th>pinned</th><th>epochs, in the order sealed</th></tr>"
    );
    for instance in instances {
        let starts = if instance.genesis {
            "with its first epoch"
        } else {
            "<span class=\"bad\">after a header not in the input</span>"
        };
        let epochs: Vec<String> = instance.epochs.iter().map(|e| esc(e)).collect();
        let _ = write!(
            html,
            "<tr><td class=\"mono\">{}</td><td>{starts}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            esc(&instance.instance),
            if instance.pinned { "yes" } else { "no" },
            epochs.join(", ")
        );
    }
    let _ = write!(html, "</table>");
}

fn render_runs(html: &mut String, runs: &[&TimelineEntry]) {
    if runs.is_empty() {
        return;
    }
    let mut colour_of: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for run in runs {
        let next = COLOURS[colour_of.len() % COLOURS.len()];
        colour_of.entry((&run.platform, &run.measurement)).or_insert(next);
    }
    let total: u64 = runs.iter().map(|r| r.batches).sum::<u64>().max(1);
    let _ = write!(html, "<div class=\"bar\" role=\"img\" aria-label=\"batches by code version\">");
    for run in runs {
        let share = run.batches as f64 * 100.0 / total as f64;
        let colour =
            colour_of.get(&(run.platform.as_str(), run.measurement.as_str())).copied().unwrap_or(COLOURS[0]);
        let _ = write!(
            html,
            "<span style=\"width:{share:.3}%;background:{colour}\" title=\"{} {} .. {}\"></span>",
            esc(run.version.as_deref().unwrap_or(&run.measurement)),
            esc(&run.from),
            esc(&run.to)
        );
    }
    let _ = write!(html, "</div><table><tr><th>from</th><th>to</th><th>platform</th><th>measurement</th><th>version</th><th>batches</th><th>allowed</th></tr>");
    let mut previous: Option<&TimelineEntry> = None;
    for run in runs {
        if let Some(before) =
            previous.filter(|p| p.measurement != run.measurement || p.platform != run.platform)
        {
            let label = |r: &TimelineEntry| {
                r.version.clone().unwrap_or_else(|| r.measurement.chars().take(16).collect())
            };
            let _ = write!(
                html,
                "<tr class=\"change\"><td colspan=\"7\">Measurement changed at {}: a new version was deployed ({} &rarr; {})</td></tr>",
                esc(&run.from),
                esc(&label(before)),
                esc(&label(run))
            );
        }
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&run.from),
            esc(&run.to),
            esc(&run.platform),
            esc(&run.measurement),
            esc(run.version.as_deref().unwrap_or("(not in a policy)")),
            run.batches,
            if run.allowed { "yes" } else { "<span class=\"bad\">NO</span>" }
        );
        previous = Some(run);
    }
    let _ = write!(html, "</table>");
}

/// What trust resting on `basis` means, for people.
pub fn basis_text(basis: TrustBasis) -> &'static str {
    match basis {
        TrustBasis::PinnedVendorRoot => "a vendor root pinned in teelog",
        TrustBasis::DevRoot => "a dev root given with --trust-root (not hardware-backed)",
        TrustBasis::TpmEnrollmentCa => "a TPM enrollment CA given with --trust-root",
        TrustBasis::BarePublicKey => "a public key given with --pubkey (no attestation)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teelog_core::{Finding, FindingKind};

    #[test]
    fn nothing_from_the_input_becomes_markup() {
        let hostile = "<script>alert(1)</script>\"'&\u{202e}";
        let report = Report {
            ok: false,
            batches: 1,
            records: 2,
            duplicates: 0,
            findings: vec![Finding {
                kind: FindingKind::ChainBreak,
                stream: Some(hostile.into()),
                epoch: Some(hostile.into()),
                seq: Some(3),
                record_index: None,
                detail: hostile.into(),
            }],
            omitted_findings: BTreeMap::new(),
            torn_writes: 0,
            unreferenced_documents: Vec::new(),
            trust: Vec::new(),
            instances: vec![StreamInstance {
                stream: hostile.into(),
                instance: hostile.into(),
                genesis: false,
                pinned: false,
                epochs: vec![hostile.into()],
            }],
            checkpoints: 0,
            checkpoint_times: Vec::new(),
            dev_attested: 0,
            keys_needed: Vec::new(),
            timeline: None,
            measurements_unjudged: false,
        };
        let context =
            ReportContext { subject: hostile.into(), version: "t".into(), ..ReportContext::default() };
        let html = render(&report, &context);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\\u{202e}"), "{html}");
        assert!(html.contains("FAIL: 1 findings"));
        // The stream's instance is listed, and said to start after a header the input lacks.
        assert!(html.contains("0 epochs in 1 instances"), "{html}");
        assert!(html.contains("after a header not in the input"), "{html}");
    }
}
