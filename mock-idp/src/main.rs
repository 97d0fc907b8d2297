//! `mock-idp --listen 127.0.0.1:9090 --client id:secret [--client ...] [--expires-in 86400]`

use std::net::SocketAddr;
use std::process::ExitCode;

use mock_idp::{Client, Config, MockIdp};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-idp: {e}");
            eprintln!(
                "usage: mock-idp --listen ADDR --client ID:SECRET [--client ...] [--expires-in SECONDS]"
            );
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9090));
    let mut config = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--client" => {
                let v = value()?;
                let (id, secret) = v.split_once(':').ok_or("--client takes ID:SECRET")?;
                config.clients.push(Client { id: id.into(), secret: secret.into() });
            }
            "--expires-in" => {
                config.expires_in = value()?.parse().map_err(|e| format!("--expires-in: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let idp = MockIdp::start_on(listen, config).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("mock-idp listening on {}", idp.addr());
    loop {
        std::thread::park();
    }
}
