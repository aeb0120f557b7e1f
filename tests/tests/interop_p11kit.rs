//! p11-kit: the module file shipped in `packaging/p11-kit/` registers the module, so
//! `p11-kit list-modules` shows it with its token and applications going through
//! `p11-kit-proxy.so` use the cluster without configuring a module path; the install step
//! puts both files where p11-kit looks.
//!
//! Nothing is written to system directories: the module file goes to a user configuration
//! (`$HOME/.config/pkcs11/modules/`) in a temporary HOME. p11-kit ignores user configuration in
//! programs running as root, so when the tests run as root (CI) the p11-kit clients run as
//! `nobody` (`setpriv`), with copies of the module, its configuration and its client key
//! readable to that user.

use hsm_tests::build::workspace_root;
use hsm_tests::interop::{Client, Fixture, TestGuard, read_output};
use hsm_tests::keys::sha256;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The token label the module reports.
const TOKEN_LABEL: &str = "hsm-cluster";
/// `nobody` on Debian.
const NOBODY: &str = "65534";

/// Where and as whom the p11-kit clients run.
#[derive(Debug)]
struct UserSetup {
    /// The temporary HOME holding `.config/pkcs11/modules/hsm.module`.
    home: PathBuf,
    /// The module configuration the clients read.
    config: PathBuf,
    /// A directory the client user may write.
    work: PathBuf,
    /// Run the clients as `nobody` (the tests run as root).
    as_nobody: bool,
}

fn running_as_root(fx: &Fixture) -> bool {
    let probe = fx.path("uid-probe");
    fs::write(&probe, b"").expect("write probe");
    fs::metadata(&probe).expect("stat probe").uid() == 0
}

/// The packaged module file with its `module:` line pointing at `module`.
fn module_file_for(module: &Path) -> String {
    let packaged = workspace_root().join("packaging/p11-kit/hsm.module");
    let text = fs::read_to_string(&packaged)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", packaged.display()));
    assert!(
        text.lines().any(|l| l == "module: libhsm_pkcs11.so"),
        "{} does not name libhsm_pkcs11.so",
        packaged.display()
    );
    text.replace(
        "module: libhsm_pkcs11.so",
        &format!("module: {}", module.display()),
    )
}

/// Prepares the user configuration once.
fn user_setup(fx: &Fixture) -> &'static UserSetup {
    static SETUP: OnceLock<UserSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let as_nobody = running_as_root(fx);
        let root = fx.path("p11kit-user");
        let home = root.join("home");
        let modules = home.join(".config/pkcs11/modules");
        fs::create_dir_all(&modules).expect("create user p11-kit configuration");
        let (module, config) = if as_nobody {
            // Copies `nobody` can read, wherever the workspace and the cluster live.
            let module = root.join("libhsm_pkcs11.so");
            fs::copy(&fx.module, &module).expect("copy module");
            let mut conf: toml::Table =
                toml::from_str(&fs::read_to_string(&fx.client_config).expect("read config"))
                    .expect("parse config");
            let key = root.join("app.key");
            fs::copy(conf["client_key"].as_str().expect("client_key"), &key)
                .expect("copy client key");
            conf.insert(
                "client_key".into(),
                key.to_string_lossy().into_owned().into(),
            );
            conf.insert(
                "log_file".into(),
                root.join("module.log")
                    .to_string_lossy()
                    .into_owned()
                    .into(),
            );
            let config = root.join("pkcs11.toml");
            fs::write(&config, toml::to_string(&conf).expect("encode")).expect("write config");
            (module, config)
        } else {
            (fx.module.clone(), fx.client_config.clone())
        };
        fs::write(modules.join("hsm.module"), module_file_for(&module)).expect("write module file");
        if as_nobody {
            fx.client("chown -R nobody", "chown")
                .args(["-R", &format!("{NOBODY}:{NOBODY}")])
                .arg(&root)
                .run()
                .ok();
        }
        UserSetup {
            home,
            config,
            work: root,
            as_nobody,
        }
    })
}

/// A p11-kit client as the configured user, with the temporary HOME.
fn as_user(fx: &Fixture, label: &str, program: impl AsRef<OsStr>) -> Client {
    let user = user_setup(fx);
    let client = if user.as_nobody {
        fx.client(label, "setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--"])
            .arg(program)
    } else {
        fx.client(label, program)
    };
    client
        .env("HOME", &user.home)
        .env("XDG_CONFIG_HOME", user.home.join(".config"))
        .env(hsm_proto::config::MODULE_CONFIG_ENV, &user.config)
        .current_dir(&user.work)
}

fn setup(test: &str) -> Option<TestGuard> {
    Fixture::for_test(test, &["p11-kit"])
}

/// The lines of `name`'s section in `p11-kit list-modules` output.
fn module_section(listing: &str, name: &str) -> Option<String> {
    let mut lines = listing
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{name}:")));
    let head = lines.next()?;
    let body: Vec<&str> = lines
        .take_while(|l| l.starts_with(char::is_whitespace) || l.is_empty())
        .collect();
    Some(format!("{head}\n{}", body.join("\n")))
}

#[test]
fn p11kit_list_modules_shows_module_and_token() {
    let Some(fx) = setup("p11kit_list_modules_shows_module_and_token") else {
        return;
    };
    let run = as_user(&fx, "p11-kit list-modules", "p11-kit")
        .arg("list-modules")
        .run()
        .ok();
    let section =
        module_section(&run.stdout, "hsm").unwrap_or_else(|| panic!("no module `hsm`\n{run}"));
    for needle in [
        "library-description: hsm-cluster PKCS#11 module",
        "library-manufacturer: hsm-cluster project",
        &format!("token: {TOKEN_LABEL}"),
        "manufacturer: hsm-cluster project",
        "token-initialized",
        "login-required",
    ] {
        assert!(
            section.contains(needle),
            "module `hsm` lacks {needle:?}:\n{section}\n{run}"
        );
    }
}

/// `p11-kit-proxy.so`, the module p11-kit-aware applications load.
fn proxy_module() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/lib/p11-kit-proxy.so")];
    if let Ok(dirs) = fs::read_dir("/usr/lib") {
        candidates.extend(dirs.flatten().map(|d| d.path().join("p11-kit-proxy.so")));
    }
    candidates.push(PathBuf::from("/usr/lib64/p11-kit-proxy.so"));
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn p11kit_proxy_reaches_token() {
    let test = "p11kit_proxy_reaches_token";
    let Some(fx) = setup(test) else {
        return;
    };
    let Some(proxy) = proxy_module() else {
        hsm_tests::interop::loud(&format!(
            "SKIPPED {test}: p11-kit-proxy.so not found (Debian package p11-kit-modules)"
        ));
        return;
    };
    let user = user_setup(&fx);
    let tool = |label: &str| {
        as_user(&fx, label, &fx.pkcs11_tool)
            .arg("--module")
            .arg(&proxy)
    };
    tool("pkcs11-tool via p11-kit-proxy --list-slots")
        .arg("--list-slots")
        .run()
        .ok()
        .contains(&format!("token label        : {TOKEN_LABEL}"));
    // An application using the proxy generates and signs with a key in the cluster.
    let with_login = |label: &str| {
        tool(label)
            .args(["--token-label", TOKEN_LABEL, "--login", "--pin"])
            .arg(fx.pin())
    };
    with_login("pkcs11-tool via p11-kit-proxy --keypairgen")
        .args(["--keypairgen", "--key-type", "EC:prime256v1"])
        .args(["--label", "p11kit-ec", "--id", "70"])
        .run()
        .ok()
        .contains("Key pair generated:");
    let digest = user.work.join("p11kit.digest");
    let sig = user.work.join("p11kit.sig");
    // Written by the test, read by the client user.
    fs::write(&digest, sha256(b"signed through p11-kit-proxy")).expect("write digest");
    let run = with_login("pkcs11-tool via p11-kit-proxy --sign")
        .args(["--sign", "-m", "ECDSA", "--id", "70", "-i"])
        .arg(&digest)
        .arg("-o")
        .arg(&sig)
        .run()
        .ok();
    assert_eq!(read_output(&sig, &run).len(), 64, "P-256 r || s\n{run}");
    // The module itself (no proxy) verifies it.
    fx.pkcs11_tool_user("pkcs11-tool --verify (the proxy's signature)")
        .args(["--verify", "-m", "ECDSA", "--id", "70", "-i"])
        .arg(&digest)
        .arg("--signature-file")
        .arg(&sig)
        .run()
        .ok()
        .contains("Signature is valid");
}

#[test]
fn p11kit_install_script_places_module_and_registration() {
    let Some(fx) = setup("p11kit_install_script_places_module_and_registration") else {
        return;
    };
    let script = workspace_root().join("packaging/p11-kit/install.sh");
    let dest = fx.path("p11kit-destdir");
    fx.client("packaging/p11-kit/install.sh", "sh")
        .arg(&script)
        .arg(&fx.module)
        .env("DESTDIR", &dest)
        .env("P11_MODULE_DIR", "/usr/lib/pkcs11-test")
        .env("P11_MODULE_CONFIG_DIR", "/etc/pkcs11/modules")
        .run()
        .ok()
        .contains("installed");
    let installed = dest.join("usr/lib/pkcs11-test/libhsm_pkcs11.so");
    assert_eq!(
        fs::read(&installed).expect("installed module"),
        fs::read(&fx.module).expect("built module"),
        "installed module differs"
    );
    let registration = dest.join("etc/pkcs11/modules/hsm.module");
    assert_eq!(
        fs::read_to_string(&registration).expect("installed module file"),
        fs::read_to_string(workspace_root().join("packaging/p11-kit/hsm.module"))
            .expect("packaged module file"),
    );
    for file in [&installed, &registration] {
        assert_eq!(
            fs::metadata(file).expect("stat").mode() & 0o777,
            0o644,
            "{} must be world-readable, not writable",
            file.display()
        );
    }
    // Without P11_MODULE_DIR it asks p11-kit (or the multiarch directory).
    let dest = fx.path("p11kit-destdir-default");
    let run = fx
        .client("packaging/p11-kit/install.sh (default directories)", "sh")
        .arg(&script)
        .arg(&fx.module)
        .env("DESTDIR", &dest)
        .run()
        .ok();
    assert!(
        dest.join("etc/pkcs11/modules/hsm.module").is_file(),
        "module file not in /etc/pkcs11/modules\n{run}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.ends_with("/pkcs11/libhsm_pkcs11.so")),
        "module not in a pkcs11 module directory\n{run}"
    );
}
