//! `eventops-client` — the reverse tunnel and agent (SPEC §9). This build only parses and
//! prints its flags; connecting, dialing and agent mode come with the tunnel issue.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "eventops-client",
    version,
    about = "eventops reverse tunnel and agent: connects out to the server over WebSocket"
)]
struct Args {
    /// The server's tunnel endpoint, e.g. ws://HOST:PORT/api/dialer/connect
    #[arg(long)]
    connect: String,
    /// The actuator's tunnel.clientId
    #[arg(long)]
    id: String,
    /// The actuator's tunnel.clientToken
    #[arg(long, env = "EVENTOPS_CLIENT_TOKEN", hide_env_values = true)]
    token: String,
    /// The user who owns the actuator definition
    #[arg(long)]
    user: String,
    /// This machine's label (default: the hostname)
    #[arg(long, env = "EVENTOPS_MACHINE_LABEL")]
    label: Option<String>,
    /// Addresses the server may dial through this client, as CIDR:port, comma separated
    /// (default: the loopback host only)
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let label = args.label.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    let allow = if args.allow.is_empty() {
        "127.0.0.1/32:*, ::1/128:*".to_string()
    } else {
        args.allow.join(", ")
    };
    println!("connect: {}", args.connect);
    println!("id:      {}", args.id);
    println!(
        "token:   {}",
        if args.token.is_empty() {
            "(empty)"
        } else {
            "***"
        }
    );
    println!("user:    {}", args.user);
    println!("label:   {label}");
    println!("allow:   {allow}");
    eprintln!("eventops-client: the tunnel is not implemented in this build yet");
    std::process::exit(1);
}
