//! `rds-emulator`: run the RouterOS REST emulator on its own, for local
//! runs and demos. Prints the URL on the first line of standard output,
//! then serves until killed.

use std::{path::PathBuf, time::Duration};

use rds_emulator::{Emulator, Options, User};

const USAGE: &str = "Usage: rds-emulator [--address IP] [--port N] [--plain] [--user NAME:PASSWORD]
                    [--pool-size BYTES] [--mount-point NAME] [--credentials-dir DIR]

  --address IP           loopback address to listen on (default 127.0.0.1;
                         one process per emulated server: 127.0.0.2, ...)
  --port N               port on the address (default: any free port)
  --plain                serve plain HTTP instead of HTTPS
  --user NAME:PASSWORD   the REST user (default csi:rds-test-password)
  --pool-size BYTES      size of the storage pool (default 1 TiB)
  --mount-point NAME     where the pool is mounted (default storage-pool)
  --credentials-dir DIR  write DIR/username, DIR/password and DIR/ca.crt
                         for the controller's --rds-credentials-dir
";

fn main() {
    let mut opts = Options::default();
    let mut credentials_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--address" => {
                opts.address = value()
                    .parse()
                    .ok()
                    .filter(|ip: &std::net::IpAddr| ip.is_loopback())
                    .unwrap_or_else(|| fail("--address takes a loopback IP address"))
            }
            "--port" => {
                opts.port = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--port takes a number"))
            }
            "--plain" => opts.tls = false,
            "--user" => {
                let v = value();
                let (name, password) = v
                    .split_once(':')
                    .unwrap_or_else(|| fail("--user takes NAME:PASSWORD"));
                opts.users = vec![User::admin(name, password)];
            }
            "--pool-size" => {
                opts.pool_bytes = value()
                    .parse()
                    .unwrap_or_else(|_| fail("--pool-size takes a number of bytes"))
            }
            "--mount-point" => opts.mount_point = value(),
            "--credentials-dir" => credentials_dir = Some(PathBuf::from(value())),
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let emu = Emulator::start(opts).unwrap_or_else(|e| fail(&format!("cannot start: {e}")));
    if let Some(dir) = credentials_dir {
        emu.write_credentials(&dir)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    }
    println!("{}", emu.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("rds-emulator: {msg}\n\n{USAGE}");
    std::process::exit(2);
}
