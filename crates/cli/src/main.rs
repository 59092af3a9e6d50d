//! `canopy`: the one binary of Canopy. See `canopy --help`.

mod capture;
mod link;
mod translate;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

const ABOUT: &str = "Canopy: virtual private cloud networks on shared hosts";

const LONG_ABOUT: &str = "\
Canopy: virtual private cloud networks on shared hosts.

Tenants get isolated virtual IPv4 networks whose VMs talk as if on their own LAN. Between
hosts, every VM packet crosses an IPv6 substrate without encapsulation: the IPv4 header is
replaced by an IPv6 one (RFC 7915 translation) whose addresses carry a host's 72-bit
locator, the tenant's 24-bit network id and the VM's IPv4 address:

  | locator: 72 bits | network id: 24 bits | IPv4 address: 32 bits |

Only the translator is available so far; the manager, the per-host agent, the edges and
the lab come later.

Logs go to stderr: -v for info, -vv for debug (each dropped packet), -vvv for trace, or
set RUST_LOG (e.g. RUST_LOG=canopy=debug), which takes precedence.";

#[derive(Debug, Parser)]
#[command(name = "canopy", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Translate(translate::TranslateArgs),
}

/// Exit code for bad arguments and unusable files, as for clap's usage errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::Translate(args) => match translate::run(args) {
            Ok(summary) => {
                eprint!("{}", summary.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("canopy: error: {e:#}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
