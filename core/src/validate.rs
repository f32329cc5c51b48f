//! Validation of user-supplied text: lengths, tags, URLs. Errors carry stable codes.

use crate::error::{Error, Result};
use crate::limits;

/// Trims nothing, checks 1..=max characters and no control characters.
pub fn name(field: &str, value: &str) -> Result<()> {
    text(field, value, limits::MAX_NAME_CHARS)?;
    if value.trim().is_empty() {
        return Err(Error::invalid("invalid_field", format!("{field} must not be blank")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid("invalid_field", format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// Checks a free-text field's length in characters, and that it holds no NUL
/// (PostgreSQL cannot store U+0000 in text or jsonb).
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid("field_too_long", format!("{field} is longer than {max_chars} characters")));
    }
    if value.contains('\0') {
        return Err(Error::invalid("invalid_field", format!("{field} must not contain NUL characters")));
    }
    Ok(())
}

/// Removes NUL characters from text that did not come from a client (model
/// output), so it can always be stored.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') { text.replace('\0', "").into() } else { text.into() }
}

/// Tags: at most MAX_TAGS, each 1..=MAX_TAG_CHARS of `[A-Za-z0-9_.:-]`, no duplicates.
pub fn tags(values: &[String]) -> Result<()> {
    if values.len() > limits::MAX_TAGS {
        return Err(Error::invalid("too_many_tags", format!("at most {} tags", limits::MAX_TAGS)));
    }
    for (i, t) in values.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= limits::MAX_TAG_CHARS
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !ok {
            return Err(Error::invalid(
                "invalid_tag",
                format!("tag {t:?} must be 1-{} characters of [A-Za-z0-9_.:-]", limits::MAX_TAG_CHARS),
            ));
        }
        if values[..i].contains(t) {
            return Err(Error::invalid("invalid_tag", format!("duplicate tag {t:?}")));
        }
    }
    Ok(())
}

/// A secret the workers send as an HTTP header value (a provider's API key, as
/// `Authorization: Bearer <key>`): 1..=MAX_SECRET_CHARS visible ASCII characters. Anything
/// else (a control character, a space, a non-ASCII letter) could never be sent, and every
/// turn using it would fail. The message never quotes the value.
pub fn header_secret(field: &str, value: &str) -> Result<()> {
    let sendable = (1..=limits::MAX_SECRET_CHARS).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    if !sendable {
        return Err(Error::invalid(
            "invalid_api_key",
            format!(
                "{field} must be 1-{} visible ASCII characters (no spaces or control characters): it is sent as an HTTP header",
                limits::MAX_SECRET_CHARS
            ),
        ));
    }
    Ok(())
}

/// An http(s) base URL that parses (RFC 3986, via the `url` crate), names a
/// host, and carries no credentials, query or fragment.
pub fn base_url(value: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("invalid_base_url", format!("base_url {why}"));
    text("base_url", value, limits::MAX_URL_CHARS)?;
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace"));
    }
    let url = url::Url::parse(value).map_err(|e| bad(&format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials; set api_key instead"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not contain a query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(name("name", "ok").is_ok());
        assert!(name("name", " ").is_err());
        assert!(name("name", &"x".repeat(201)).is_err());
        assert!(tags(&["a".into(), "b:c".into()]).is_ok());
        assert!(tags(&["a".into(), "a".into()]).is_err());
        assert!(tags(&["bad tag".into()]).is_err());
        assert!(base_url("http://127.0.0.1:8090/v1").is_ok());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://user:pw@x").is_err());
        assert!(base_url("http://[::1").is_err(), "unparseable host");
        assert!(base_url("http://h/v1?x=1").is_err());
        assert!(matches!(text("t", "a\0b", 10), Err(Error::Invalid { code: "invalid_field", .. })));
        assert_eq!(storable("a\0b"), "ab");
        assert!(header_secret("api_key", "sk-AbC_123.~").is_ok());
        for bad in ["", "abc\u{1}def", "sk key", "sk-\u{e9}", "sk\t", "sk\n"] {
            assert!(matches!(header_secret("api_key", bad), Err(Error::Invalid { code: "invalid_api_key", .. })), "{bad:?}");
        }
        assert!(header_secret("api_key", &"k".repeat(limits::MAX_SECRET_CHARS + 1)).is_err());
    }
}
