//! Command lines as a shell reads them: what the launchers print and write into scripts.

/// `s` as one shell word: as it is when it holds only `[A-Za-z0-9-_./=:+,@]`, else single-quoted.
pub fn shell_quote(s: &std::ffi::OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
