//! Reading passphrases and passwords: from an environment variable when set (scripts, CI),
//! else from the terminal without echo, else one line of stdin.

use crate::error::{CtlError, Result};
use hsm_proto::Password;
use nix::sys::termios::{self, LocalFlags, SetArg};
use std::io::{self, BufRead, IsTerminal, Write};
use zeroize::Zeroizing;

/// The unseal passphrase for `init` and `unseal`.
pub const ENV_UNSEAL: &str = "HSM_UNSEAL_PASSPHRASE";
/// The initial admin's password for `init`.
pub const ENV_ADMIN_PASSWORD: &str = "HSM_ADMIN_PASSWORD";
/// `admin:password` for commands that log in as an admin.
pub const ENV_SO_PIN: &str = "HSM_SO_PIN";
/// The new user's password for `user create`.
pub const ENV_NEW_USER_PASSWORD: &str = "HSM_NEW_USER_PASSWORD";

/// A secret from `env`, or asked for with `prompt` (twice when `confirm`, for new secrets).
///
/// # Errors
/// If the secret is empty, the two entries differ, or stdin cannot be read.
pub fn obtain(env: &str, prompt: &str, confirm: bool) -> Result<Password> {
    if let Some(value) = std::env::var_os(env) {
        let value = value
            .into_string()
            .map_err(|_| CtlError::Usage(format!("${env} is not valid UTF-8")))?;
        return non_empty(Password::new(value), env);
    }
    let first = read_hidden(prompt, env)?;
    if confirm && io::stdin().is_terminal() {
        let second = read_hidden("Repeat to confirm: ", env)?;
        if first.expose_secret() != second.expose_secret() {
            return Err(CtlError::Usage("the two entries differ".into()));
        }
    }
    non_empty(first, env)
}

fn non_empty(p: Password, env: &str) -> Result<Password> {
    if p.expose_secret().is_empty() {
        Err(CtlError::Usage(format!(
            "empty secret (set ${env} or type it at the prompt)"
        )))
    } else {
        Ok(p)
    }
}

/// Splits a PKCS#11-style PIN `name:password` at the first `:`.
///
/// # Errors
/// If there is no `:` or either part is empty.
pub fn split_pin(pin: &Password) -> Result<(String, Password)> {
    match pin.expose_secret().split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok((user.to_owned(), Password::new(password.to_owned())))
        }
        _ => Err(CtlError::Usage(
            "the admin PIN must have the form name:password".into(),
        )),
    }
}

/// Reads one line: without echo from a terminal, plainly from a pipe.
fn read_hidden(prompt: &str, env: &str) -> Result<Password> {
    let stdin = io::stdin();
    let mut line = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        let saved = termios::tcgetattr(&stdin)
            .map_err(|e| CtlError::Usage(format!("cannot read terminal settings: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
            .map_err(|e| CtlError::Usage(format!("cannot turn off echo: {e}")))?;
        let read = stdin.lock().read_line(&mut line);
        // Restore echo before looking at the result, whatever it is.
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        read.map_err(|e| CtlError::Usage(format!("cannot read from the terminal: {e}")))?;
    } else {
        let n = stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CtlError::Usage(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            return Err(CtlError::Usage(format!(
                "no input for \"{}\": stdin is closed and ${env} is not set",
                prompt.trim_end().trim_end_matches(':')
            )));
        }
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
    Ok(Password::new(trimmed))
}

/// A fresh random password for development users: 24 hex characters (96 bits), no characters
/// that need quoting in a shell or in a `name:password` PIN.
///
/// # Errors
/// If the system random source fails.
pub fn generate_password() -> Result<Password> {
    let mut bytes = Zeroizing::new([0u8; 12]);
    aws_lc_rs::rand::fill(bytes.as_mut())
        .map_err(|_| CtlError::Usage("the system random source failed".into()))?;
    Ok(Password::new(hex::encode(bytes.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_split_at_the_first_colon() {
        let (user, pw) = split_pin(&Password::new("admin:a:b".into())).unwrap();
        assert_eq!(user, "admin");
        assert_eq!(pw.expose_secret(), "a:b");
        assert!(split_pin(&Password::new("admin".into())).is_err());
        assert!(split_pin(&Password::new(":pw".into())).is_err());
    }

    #[test]
    fn generated_passwords_differ_and_are_hex() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 24);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
