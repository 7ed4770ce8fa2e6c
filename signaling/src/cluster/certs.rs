//! `aula cluster ca` and `aula cluster cert`: the files of the cluster CA and of each node's
//! certificate, which relay links between nodes require (`aula_sfu::relay::tls`).
//!
//! Private keys are written readable by their owner only (0600), and nothing is ever overwritten:
//! replacing a CA key by mistake would cut every node off, so the operator deletes files first.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aula_sfu::relay::tls::{self, PemCert};

use crate::cli::ClusterCommand;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Runs a `cluster` command; the files it wrote.
pub fn run(command: &ClusterCommand) -> Result<Vec<PathBuf>, CertsError> {
    match command {
        ClusterCommand::Ca { out } => write_pair(out, "ca", &tls::generate_ca()?),
        ClusterCommand::Cert { node, ca, out } => {
            let ca = PemCert {
                cert: read(&ca.join("ca.pem"))?,
                key: read(&ca.join("ca.key"))?,
            };
            write_pair(out, "node", &tls::issue_node_cert(&ca, node)?)
        }
    }
}

fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|e| CertsError::Io(path.to_path_buf(), e))
}

/// Writes `<name>.pem` and `<name>.key` into `dir` (created if missing).
fn write_pair(dir: &Path, name: &str, pair: &PemCert) -> Result<Vec<PathBuf>, CertsError> {
    fs::create_dir_all(dir).map_err(|e| CertsError::Io(dir.to_path_buf(), e))?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    // Both paths are checked before either is written, so a refusal leaves no half pair.
    for path in [&cert, &key] {
        if path.exists() {
            let exists = std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "already exists; not overwritten (delete it first)",
            );
            return Err(CertsError::Io(path.clone(), exists));
        }
    }
    write_new(&cert, &pair.cert, 0o644)?;
    write_new(&key, &pair.key, 0o600)?;
    Ok(vec![cert, key])
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|e| CertsError::Io(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn cluster_command(args: &[&str]) -> ClusterCommand {
        let cli = Cli::try_parse_from([&["aula", "cluster"], args].concat()).expect("parses");
        let Command::Cluster { command } = cli.command else {
            panic!("not a cluster command: {:?}", cli.command);
        };
        command
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ca_and_node_certificates_are_written_with_private_keys_0600() {
        let dir = std::env::temp_dir().join(format!("aula-cluster-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca_dir = dir.join("ca");
        let node_dir = dir.join("eu-1");

        let ca = cluster_command(&["ca", "--out", ca_dir.to_str().unwrap()]);
        assert_eq!(
            run(&ca).unwrap(),
            [ca_dir.join("ca.pem"), ca_dir.join("ca.key")]
        );
        let node = cluster_command(&[
            "cert",
            "--node",
            "eu-1",
            "--ca",
            ca_dir.to_str().unwrap(),
            "--out",
            node_dir.to_str().unwrap(),
        ]);
        assert_eq!(
            run(&node).unwrap(),
            [node_dir.join("node.pem"), node_dir.join("node.key")]
        );

        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&node_dir.join("node.key")), 0o600);
        // What was written is what a node loads: its TLS configs build from the files.
        let node_pair = PemCert {
            cert: read(&node_dir.join("node.pem")).unwrap(),
            key: read(&node_dir.join("node.key")).unwrap(),
        };
        tls::NodeTls::new(&read(&ca_dir.join("ca.pem")).unwrap(), &node_pair).unwrap();

        // Nothing is overwritten, and a refused CA key stays as it was.
        let key_before = read(&ca_dir.join("ca.key")).unwrap();
        assert!(matches!(run(&ca), Err(CertsError::Io(path, _)) if path == ca_dir.join("ca.pem")));
        assert!(run(&node).is_err());
        assert_eq!(read(&ca_dir.join("ca.key")).unwrap(), key_before);

        // A node id that cannot name a certificate, and a missing CA, are errors.
        let bad = cluster_command(&[
            "cert",
            "--node",
            "a b",
            "--ca",
            ca_dir.to_str().unwrap(),
            "--out",
            dir.join("x").to_str().unwrap(),
        ]);
        assert!(matches!(run(&bad), Err(CertsError::Tls(_))));
        let no_ca = cluster_command(&[
            "cert",
            "--node",
            "eu-2",
            "--ca",
            dir.join("none").to_str().unwrap(),
            "--out",
            dir.join("y").to_str().unwrap(),
        ]);
        assert!(matches!(run(&no_ca), Err(CertsError::Io(..))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
