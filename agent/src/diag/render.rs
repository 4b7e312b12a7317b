//! The human form of a diag [`Report`]: one block per step, verdict first, wrapped to fit an
//! 80-column serial console, colour only when the caller says the output is a terminal.

use std::fmt::Write as _;

use super::steps::Verdict;
use super::Report;
use crate::status::fmt_time;

/// Width of a serial console.
pub const WIDTH: usize = 80;
/// Verdict column (`FAIL` and two spaces).
const VERDICT_COL: usize = 6;
/// Title column.
const TITLE_COL: usize = 16;
/// Where figures and hints start.
const TEXT_COL: usize = VERDICT_COL + TITLE_COL;

fn paint(v: Verdict, colour: bool) -> String {
    let label = v.label();
    if !colour {
        return label.to_string();
    }
    let code = match v {
        Verdict::Skip => "2",
        Verdict::Ok => "32",
        Verdict::Warn => "1;33",
        Verdict::Fail => "1;31",
    };
    format!("\x1b[{code}m{label}\x1b[0m")
}

/// Greedy word wrap of `text` into lines of at most `width` characters (longer words are cut).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The report as text, every line at most [`WIDTH`] columns (not counting colour codes).
pub fn human(report: &Report, colour: bool) -> String {
    let mut out = String::new();
    let who = match (&report.device, &report.tenant) {
        (Some(d), Some(t)) => format!("device {d}, tenant {t}"),
        _ => "device unknown".into(),
    };
    for line in wrap(
        &format!(
            "licd diag {} - {who} - {}{}",
            report.agent_version,
            fmt_time(report.at),
            if report.offline { " - offline" } else { "" }
        ),
        WIDTH,
    ) {
        let _ = writeln!(out, "{line}");
    }
    let pad = " ".repeat(TEXT_COL);
    let text_width = WIDTH - TEXT_COL;
    for step in &report.steps {
        let label = paint(step.verdict, colour);
        let label_pad = " ".repeat(VERDICT_COL - step.verdict.label().len());
        let title: String = step.title.chars().collect();
        let mut lines = wrap(&step.figure, text_width).into_iter();
        if title.chars().count() < TITLE_COL {
            let first = lines.next().unwrap_or_default();
            let _ = writeln!(out, "{label}{label_pad}{title:<TITLE_COL$}{first}");
        } else {
            for (i, t) in wrap(&title, WIDTH - VERDICT_COL).into_iter().enumerate() {
                if i == 0 {
                    let _ = writeln!(out, "{label}{label_pad}{t}");
                } else {
                    let _ = writeln!(out, "{}{t}", " ".repeat(VERDICT_COL));
                }
            }
        }
        for line in lines {
            let _ = writeln!(out, "{pad}{line}");
        }
        if let Some(hint) = &step.hint {
            for (i, line) in wrap(&format!("hint: {hint}"), text_width)
                .into_iter()
                .enumerate()
            {
                let indent = if i == 0 { "" } else { "      " };
                let line = if i == 0 {
                    line
                } else {
                    line.trim_start().to_string()
                };
                let _ = writeln!(out, "{pad}{indent}{line}");
            }
        }
    }
    let count = |v| report.steps.iter().filter(|s| s.verdict == v).count();
    let _ = writeln!(
        out,
        "result: {} ({} ok, {} warning(s), {} failed, {} skipped) - exit {}",
        paint(report.verdict, colour),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip),
        report.exit_code
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::steps::Step;
    use super::*;

    fn report() -> Report {
        let long = "x".repeat(200);
        Report::new(
            "0.1.0",
            1_800_000_000,
            Some("ap-1".into()),
            Some("acme".into()),
            false,
            vec![
                Step::new("config", "config", Verdict::Ok, "fine"),
                Step::new("tls", "TLS", Verdict::Fail, format!("a rather long figure {long} that must wrap"))
                    .hint("a hint that is also long enough to need a second line on a serial console, surely"),
                Step::new("service.x", "a-service-name-longer-than-the-column", Verdict::Warn, "grace"),
            ],
        )
    }

    #[test]
    fn every_line_fits_an_80_column_console_and_colour_is_only_on_request() {
        let plain = human(&report(), false);
        for line in plain.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("FAIL  TLS"), "{plain}");
        assert!(plain.contains("hint: a hint"), "{plain}");
        assert!(plain.ends_with("exit 2\n"), "{plain}");
        assert!(human(&report(), true).contains("\x1b[1;31mFAIL\x1b[0m"));
    }

    #[test]
    fn wrap_breaks_on_spaces_and_cuts_long_words() {
        assert_eq!(wrap("aaa bbb ccc", 8), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 8), vec!["abcdefgh", "ij"]);
        assert_eq!(wrap("", 10), vec![""]);
    }
}
