//! A throwaway SoftHSMv2 token for the SoftHSMv2 column: its own directory and
//! `SOFTHSM2_CONF`, initialized with `softhsm2-util`, deleted afterwards. Its PINs are the
//! benchmark's own and protect nothing.

use crate::error::{BenchError, Result, io};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's `softhsm2` package puts the module here.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The variable the worker reads the user PIN from.
pub const PIN_ENV: &str = "HSM_BENCH_SOFTHSM_PIN";
/// Throwaway user PIN of the benchmark token.
pub const USER_PIN: &str = "hsm-bench-user";
/// Throwaway SO PIN of the benchmark token.
const SO_PIN: &str = "hsm-bench-so";
/// The benchmark token's label.
pub const TOKEN_LABEL: &str = "hsm-bench";

/// The token directory; removed on drop.
#[derive(Debug)]
pub struct Token {
    dir: PathBuf,
}

impl Token {
    /// Creates and initializes a fresh token.
    ///
    /// # Errors
    /// SoftHSMv2 is missing or `softhsm2-util --init-token` fails.
    pub fn create(module: &Path) -> Result<Token> {
        if !module.is_file() {
            return Err(BenchError::Usage(format!(
                "{} does not exist: install SoftHSMv2 (apt-get install softhsm2) or pass \
                 --softhsm-module",
                module.display()
            )));
        }
        let dir = std::env::temp_dir().join(format!("hsm-bench-softhsm-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(io(format!("create {}", tokens.display())))?;
        let token = Token { dir };
        std::fs::write(
            token.conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            ),
        )
        .map_err(io("write softhsm2.conf"))?;
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .env("SOFTHSM2_CONF", token.conf())
            .output()
            .map_err(io("run softhsm2-util (apt-get install softhsm2)"))?;
        if !output.status.success() {
            return Err(BenchError::Module(format!(
                "softhsm2-util --init-token failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(token)
    }

    /// The `SOFTHSM2_CONF` file of this token.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("hsm-bench: cannot remove {}: {e}", self.dir.display());
        }
    }
}
