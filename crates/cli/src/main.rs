//! `canopy`: the one binary of Canopy. See `canopy --help`.

mod api_client;
mod capture;
mod daemon;
mod demo;
mod lab;
mod link;
mod policy;
mod resources;
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

The parts: `canopy manager` (the control plane: REST API, SQLite or PostgreSQL),
`canopy agent` (one per host: the VMs' TAP ports and the host's substrate TUN),
`canopy edge` (one per edge of a pool: the substrate to the outside world), the verbs
over the API (`canopy tenant|network|subnet|host|node|pool|edge create|list|show|delete`,
`canopy resolve`, `canopy route|peering|eip|port-block|security-group|acl ...`;
--url/CANOPY_URL, --token/CANOPY_TOKEN, --output table|json), `canopy translate` (the
substrate encoding over capture files), and `canopy lab` / `canopy demo` (a whole data
center of network namespaces on this machine, with real daemons and real packets; root).

Start here (root): canopy demo
Example: CANOPY_TOKEN=$ADMIN canopy tenant create acme

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
    /// Run the control plane: tenants, networks, subnets, hosts, nodes, edge pools, address
    /// resolution for authorised agents and edges, and watch streams that push to them.
    ///
    /// With no flags it serves on 127.0.0.1:7450 with a SQLite file `canopy.db` in the
    /// working directory, and prints where; `--database postgres://...` lets several
    /// replicas share one PostgreSQL. The OpenAPI document is at /openapi.json.
    ///
    /// Example: canopy manager --listen 127.0.0.1:7450 --database sqlite:/var/lib/canopy/canopy.db --admin-token s3cret
    Manager(manager::ManagerArgs),
    Translate(translate::TranslateArgs),
    Tenant(resources::TenantCmd),
    Network(resources::NetworkCmd),
    Subnet(resources::SubnetCmd),
    Host(resources::HostCmd),
    Node(resources::NodeCmd),
    Pool(resources::PoolCmd),
    Edge(resources::EdgeCmd),
    Resolve(resources::ResolveCmd),
    Route(policy::RouteCmd),
    Peering(policy::PeeringCmd),
    Eip(policy::EipCmd),
    PortBlock(policy::PortBlockCmd),
    SecurityGroup(policy::SecurityGroupCmd),
    Acl(policy::AclCmd),
    Agent(daemon::AgentArgs),
    Lab(lab::LabCmd),
    Demo(demo::DemoArgs),
}

/// Exit code for bad arguments and unusable files, as for clap's usage errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    // `canopy edge --edge-id ...` is the edge daemon; other `canopy edge` lines are verbs.
    if let Some(code) = daemon::edge_from_args(init_logging) {
        return code;
    }
    let cli = Cli::parse();
    // Daemons say what they do at info by default; tools stay quiet unless asked.
    let daemon = matches!(cli.command, Command::Manager(_) | Command::Agent(_));
    init_logging(cli.verbose + daemon as u8);
    match cli.command {
        Command::Manager(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("canopy: error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(manager::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("canopy manager: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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
        Command::Tenant(c) => api_verb(resources::Verb::Tenant(c)),
        Command::Network(c) => api_verb(resources::Verb::Network(c)),
        Command::Subnet(c) => api_verb(resources::Verb::Subnet(c)),
        Command::Host(c) => api_verb(resources::Verb::Host(c)),
        Command::Node(c) => api_verb(resources::Verb::Node(c)),
        Command::Pool(c) => api_verb(resources::Verb::Pool(c)),
        Command::Edge(c) => api_verb(resources::Verb::Edge(c)),
        Command::Resolve(c) => api_verb(resources::Verb::Resolve(c)),
        Command::Route(c) => api_verb(resources::Verb::Route(c)),
        Command::Peering(c) => api_verb(resources::Verb::Peering(c)),
        Command::Eip(c) => api_verb(resources::Verb::Eip(c)),
        Command::PortBlock(c) => api_verb(resources::Verb::PortBlock(c)),
        Command::SecurityGroup(c) => api_verb(resources::Verb::SecurityGroup(c)),
        Command::Acl(c) => api_verb(resources::Verb::Acl(c)),
        Command::Agent(a) => daemon::agent(a),
        Command::Lab(c) => lab::run(c),
        Command::Demo(a) => demo::run(a),
    }
}

/// Runs a verb over the manager's API: the answer on stdout, an error on stderr and exit 1.
fn api_verb(verb: resources::Verb) -> ExitCode {
    match resources::run(verb) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canopy: error: {e}");
            ExitCode::FAILURE
        }
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
