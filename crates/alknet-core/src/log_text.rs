//! Peer-chosen text in log lines.
//!
//! Close reasons, request ids, envelope types and error messages that carry them come from the
//! network. Logged as they are, a newline would let a peer start a forged line (one fail2ban
//! trusts, say), and terminal escapes or bidirectional overrides would let it rewrite what an
//! operator sees. Every such value goes into a log field through [`escaped`]:
//!
//! ```
//! use alknet_core::log_text::escaped;
//! let reason = "bye\nINFO authentication accepted peer=admin\x1b[2K";
//! assert_eq!(
//!     escaped(reason).to_string(),
//!     r#"bye\nINFO authentication accepted peer=admin\u{1b}[2K"#
//! );
//! ```

use std::fmt::{self, Display, Write};

/// Formats `value` (its `Display` text) on one line, with control characters, quotes,
/// backslashes and bidirectional/zero-width format characters escaped (`\n`, `\"`, `\u{202e}`).
pub fn escaped<T: Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

/// See [`escaped`].
pub struct Escaped<T>(T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

impl<T: Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Display::fmt(self, f)
    }
}

struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

/// Characters that change how text is laid out without being control characters.
fn is_layout_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() || c == '"' || c == '\\' {
                write!(self.0, "{}", c.escape_debug())?;
            } else if is_layout_format(c) {
                write!(self.0, "{}", c.escape_unicode())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Crates whose own `debug` lines carry what alknet never logs: russh writes the address of
/// every `-R` forward and the path of every socket forward.
const PRIVATE_DEBUG: &[&str] = &["russh"];

/// The `tracing` filter for the `ALKNET_LOG` setting `configured` (or `default` when unset).
/// A filter that asks for `debug` or `trace` anywhere (`DEBUG`, `4`, a bare target, which means
/// `trace`) holds the crates above at `info`, unless a directive names one of them as its
/// target (`ALKNET_LOG=debug,russh=debug`, to debug an SSH client, still gets russh's lines).
///
/// ```
/// use alknet_core::log_text::filter_spec;
/// assert_eq!(filter_spec(None, "warn"), "warn");
/// assert_eq!(filter_spec(Some("debug"), "warn"), "debug,russh=info");
/// assert_eq!(filter_spec(Some("alknet=trace"), "warn"), "alknet=trace,russh=info");
/// assert_eq!(filter_spec(Some("debug,russh=debug"), "warn"), "debug,russh=debug");
/// ```
pub fn filter_spec(configured: Option<&str>, default: &str) -> String {
    let mut spec = configured.unwrap_or(default).trim().to_owned();
    let directives: Vec<(&str, &str)> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| match d.rsplit_once('=') {
            // `target[span{field=value}]=level`: the target ends at the first `[` or `=`.
            Some((target, level)) => (target.split(['[', '=']).next().unwrap_or(""), level),
            None if is_level(d) => ("", d),
            // A bare target: everything it logs.
            None => (d, "trace"),
        })
        .collect();
    let verbose = directives.iter().any(|(_, level)| is_verbose(level));
    let missing: Vec<&str> = PRIVATE_DEBUG
        .iter()
        .copied()
        .filter(|private| {
            !directives.iter().any(|(target, _)| {
                target.trim() == *private
                    || target
                        .trim()
                        .strip_prefix(private)
                        .is_some_and(|rest| rest.starts_with("::"))
            })
        })
        .collect();
    if verbose {
        for private in missing {
            spec.push(',');
            spec.push_str(private);
            spec.push_str("=info");
        }
    }
    spec
}

/// A level as `tracing` reads one: a name in any case, or `0`–`5`.
fn is_level(text: &str) -> bool {
    [
        "off", "error", "warn", "info", "debug", "trace", "0", "1", "2", "3", "4", "5",
    ]
    .iter()
    .any(|level| text.trim().eq_ignore_ascii_case(level))
}

/// `debug` or `trace`, in any case or as `4`/`5`.
fn is_verbose(level: &str) -> bool {
    ["debug", "trace", "4", "5"]
        .iter()
        .any(|verbose| level.trim().eq_ignore_ascii_case(verbose))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_debug_holds_russh_at_info() {
        for asked in [
            "DEBUG",
            "4",
            "Trace",
            "alknet",
            "alknet::ssh",
            "info,alknet=5",
        ] {
            assert_eq!(
                filter_spec(Some(asked), "warn"),
                format!("{asked},russh=info"),
                "{asked}"
            );
        }
        for quiet in ["warn", "INFO", "3", "off", "alknet=info", ""] {
            assert_eq!(filter_spec(Some(quiet), "warn"), quiet, "{quiet}");
        }
        // Named as a target: as asked. A longer name that only starts with it is not russh.
        for named in [
            "debug,russh=debug",
            "russh::server=trace",
            "RUST=debug,russh",
        ] {
            assert_eq!(filter_spec(Some(named), "warn"), named, "{named}");
        }
        assert_eq!(
            filter_spec(Some("debug,russh_keys=debug"), "warn"),
            "debug,russh_keys=debug,russh=info"
        );
    }

    #[test]
    fn control_quote_and_bidi_characters_are_escaped() {
        let shown = escaped("a\r\nb\"c\\d\u{7}\u{9b}e\u{202e}f").to_string();
        assert_eq!(shown, r#"a\r\nb\"c\\d\u{7}\u{9b}e\u{202e}f"#);
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn plain_text_is_left_alone() {
        assert_eq!(escaped("todo/add: ü ok").to_string(), "todo/add: ü ok");
    }
}
