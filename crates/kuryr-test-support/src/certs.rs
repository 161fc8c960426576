//! Test certificates, made with the openssl CLI (no certificate crate is in the dependency
//! tree): a self-signed CA, and a server certificate for an IP address signed by one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the openssl CLI runs here (a test without it uses [`crate::skip!`]).
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh self-signed CA `<name>.crt` / `<name>.key` in `dir` (P-256, valid two days);
/// returns the certificate's path.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let subject = format!("/CN=kuryr-rs test CA {name}");
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &key,
            "-out",
            &crt,
        ],
    );
    dir.join(crt)
}

/// `server.crt` / `server.key` in `dir`: a server certificate for the address `ip`, signed by
/// the CA `ca` made by [`make_ca`] in the same directory. Returns (certificate, key).
pub fn make_server_cert(dir: &Path, ca: &str, ip: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write server.ext");
    let subject = format!("/CN={ip}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Writes to `dst` the stack's admin kubeconfig with its CA (`pki/ca.crt` of the state
/// directory, which the stack's kubeconfig names by path) replaced by `ca`: same server, same
/// client certificate, another CA to check the API server's certificate against.
pub fn stack_kubeconfig_with_ca(ca: &Path, dst: &Path) {
    let src = crate::state_file("kubeconfig");
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("{} unreadable ({e}): is the stack up?", src.display()));
    let stack_ca = crate::state_file("pki/ca.crt").display().to_string();
    assert!(
        text.contains(&stack_ca),
        "{} does not name its CA {stack_ca}",
        src.display()
    );
    std::fs::write(dst, text.replace(&stack_ca, &ca.display().to_string()))
        .expect("write the kubeconfig");
}
