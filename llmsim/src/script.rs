//! Parses the scripting commands (`!tool`, `!sleep`, `!fail`) a test puts in its last user message.

use std::time::Duration;

/// What the simulator was asked to do, decided only by the last user message's text.
///
/// Parsing never fails: text that does not match a command exactly is plain
/// text to echo, so a typo in a test shows up as an `echo:` answer instead of
/// a confusing simulator error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// Answer `echo: <text>`.
    Echo(String),
    /// Answer with one call to function `name`; `arguments` is sent verbatim
    /// (not validated, so tests can also provoke malformed arguments).
    Tool { name: String, arguments: String },
    /// `!tool a {…} !tool b {…}`: answer with several calls at once, in this order.
    Tools(Vec<(String, String)>),
    /// Wait, then behave as `then`.
    Sleep { delay: Duration, then: Box<Script> },
    /// Answer with HTTP `status`; with `times`, only the first `times` requests do.
    Fail { status: u16, times: Option<u64> },
}

impl Script {
    /// Reads the script in `text` (the whole last user message).
    pub fn parse(text: &str) -> Script {
        Self::parse_with_echo(text, text)
    }

    /// `echo_text` is what an echo answers: always the *whole* message, even
    /// when the echo is what is left after a `!sleep` prefix.
    fn parse_with_echo(text: &str, echo_text: &str) -> Script {
        let trimmed = text.trim_start();
        let (command, rest) = split_word(trimmed);
        match command {
            "!tool" if rest.contains(" !tool ") => {
                let mut calls = Vec::new();
                for part in rest.split(" !tool ") {
                    match Self::parse_with_echo(&format!("!tool {part}"), echo_text) {
                        Script::Tool { name, arguments } => calls.push((name, arguments)),
                        _ => return Script::Echo(echo_text.to_owned()),
                    }
                }
                Script::Tools(calls)
            }
            "!tool" => {
                let (name, arguments) = split_word(rest);
                if name.is_empty() {
                    return Script::Echo(echo_text.to_owned());
                }
                let arguments = arguments.trim();
                let arguments = if arguments.is_empty() { "{}" } else { arguments };
                Script::Tool { name: name.to_owned(), arguments: arguments.to_owned() }
            }
            "!sleep" => {
                let (ms, then) = split_word(rest);
                let Ok(ms) = ms.parse::<u64>() else {
                    return Script::Echo(echo_text.to_owned());
                };
                let then = if then.trim().is_empty() {
                    Script::Echo(echo_text.to_owned())
                } else {
                    Self::parse_with_echo(then, echo_text)
                };
                Script::Sleep { delay: Duration::from_millis(ms), then: Box::new(then) }
            }
            "!fail" => {
                let (status, rest) = split_word(rest);
                let (times, extra) = split_word(rest);
                let status = match status.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => s,
                    _ => return Script::Echo(echo_text.to_owned()),
                };
                if !extra.trim().is_empty() {
                    return Script::Echo(echo_text.to_owned());
                }
                let times = if times.is_empty() {
                    None
                } else {
                    match times.parse::<u64>() {
                        Ok(n) => Some(n),
                        Err(_) => return Script::Echo(echo_text.to_owned()),
                    }
                };
                Script::Fail { status, times }
            }
            _ => Script::Echo(echo_text.to_owned()),
        }
    }
}

/// Splits off the first whitespace-delimited word; the rest keeps its inner spacing.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(s: &str) -> Script {
        Script::Echo(s.to_owned())
    }

    #[test]
    fn plain_text_is_echoed_whole() {
        assert_eq!(Script::parse("hello there"), echo("hello there"));
        assert_eq!(Script::parse(""), echo(""));
        assert_eq!(Script::parse("tool math {}"), echo("tool math {}"));
    }

    #[test]
    fn tool_keeps_arguments_verbatim() {
        assert_eq!(
            Script::parse(r#"!tool math {"expression": "6*7"}"#),
            Script::Tool { name: "math".into(), arguments: r#"{"expression": "6*7"}"#.into() }
        );
        assert_eq!(Script::parse("!tool now"), Script::Tool { name: "now".into(), arguments: "{}".into() });
        assert_eq!(Script::parse("!tool"), echo("!tool"));
        assert_eq!(
            Script::parse(r#"!tool a {"x": 1} !tool b"#),
            Script::Tools(vec![("a".into(), r#"{"x": 1}"#.into()), ("b".into(), "{}".into())])
        );
    }

    #[test]
    fn sleep_wraps_the_rest_or_echoes_the_whole_message() {
        assert_eq!(
            Script::parse("!sleep 250"),
            Script::Sleep { delay: Duration::from_millis(250), then: Box::new(echo("!sleep 250")) }
        );
        assert_eq!(
            Script::parse("!sleep 5 !tool t {\"a\":1}"),
            Script::Sleep {
                delay: Duration::from_millis(5),
                then: Box::new(Script::Tool { name: "t".into(), arguments: "{\"a\":1}".into() })
            }
        );
        assert_eq!(
            Script::parse("!sleep 5 hi you"),
            Script::Sleep { delay: Duration::from_millis(5), then: Box::new(echo("!sleep 5 hi you")) }
        );
        assert_eq!(Script::parse("!sleep soon"), echo("!sleep soon"));
    }

    #[test]
    fn fail_takes_a_status_and_optional_count() {
        assert_eq!(Script::parse("!fail 429"), Script::Fail { status: 429, times: None });
        assert_eq!(Script::parse("!fail 503 2"), Script::Fail { status: 503, times: Some(2) });
        assert_eq!(Script::parse("!fail 200"), echo("!fail 200"));
        assert_eq!(Script::parse("!fail 503 twice"), echo("!fail 503 twice"));
        assert_eq!(Script::parse("!fail 503 1 extra"), echo("!fail 503 1 extra"));
    }
}
