//! `kube-emulator`: run the emulator on its own, for demos, kubectl, and
//! tests that restart the controller against a server that keeps its state.

use std::{path::PathBuf, time::Duration};

use kube_emulator::{Emulator, Options};

const USAGE: &str =
    "Usage: kube-emulator [--port N] [--tls] [--token T] [--user-token T=USER]... [--kubeconfig-dir DIR] [--seed FILE.json]

  --port N             port on 127.0.0.1 (default: any free port)
  --tls                serve HTTPS with a CA made at start
  --token T            require this bearer token (its holder is an administrator)
  --user-token T=USER  accept token T as USER (e.g. system:serviceaccount:NS:NAME),
                       authorized by the stored Roles, ClusterRoles and bindings
  --kubeconfig-dir D   write D/kubeconfig for kubectl and the controller
  --seed FILE          a JSON list of objects ({\"resource\": ..., \"object\": ...}) to create

Prints the URL on the first line of standard output, then serves until killed.
";

fn main() {
    let mut opts = Options::default();
    let mut kubeconfig_dir: Option<PathBuf> = None;
    let mut seed: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--port" => {
                opts.port = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--port takes a number"))
            }
            "--tls" => opts.tls = true,
            "--token" => opts.token = Some(value()),
            "--user-token" => {
                let v = value();
                let (t, u) = v
                    .rsplit_once('=')
                    .unwrap_or_else(|| fail("--user-token takes TOKEN=USER"));
                opts.user_tokens.push((t.to_string(), u.to_string()));
            }
            "--kubeconfig-dir" => kubeconfig_dir = Some(PathBuf::from(value())),
            "--seed" => seed = Some(PathBuf::from(value())),
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let emu = Emulator::start(opts).unwrap_or_else(|e| fail(&format!("cannot start: {e}")));
    if let Some(path) = seed {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        let items: Vec<serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        for item in items {
            let resource = item["resource"]
                .as_str()
                .unwrap_or_else(|| fail("seed item without resource"))
                .to_string();
            if let Err((code, body)) = emu.create(&resource, item["object"].clone()) {
                fail(&format!("seeding {resource}: {code} {body}"));
            }
        }
    }
    if let Some(dir) = kubeconfig_dir {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
        emu.write_kubeconfig(&dir)
            .unwrap_or_else(|e| fail(&format!("kubeconfig: {e}")));
    }
    println!("{}", emu.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("kube-emulator: {msg}\n\n{USAGE}");
    std::process::exit(2);
}
