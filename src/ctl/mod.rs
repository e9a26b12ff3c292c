//! `warren ctl`: a command-line client of the management HTTP API (issue 18), for a running
//! broker (or any RabbitMQ-compatible one).
//!
//! Here: the command line (clap), the dispatch to a command and the printing of its outcome.
//! Beside: `commands.rs` (status, listings and topology: what each asks of the API),
//! `accounts.rs` (users, permissions, vhosts, definitions), `client.rs` (HTTP, auth, errors),
//! `tables.rs` (columns, tables, status lines). It shares nothing with the broker's code and
//! never touches its data directory: everything goes through the API.

mod accounts;
mod client;
mod commands;
mod tables;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use client::{Client, CtlError};
use commands::Output;

/// The options of every `warren ctl` command, then the command.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The management API's address.
    #[arg(
        long,
        global = true,
        env = "WARREN_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    url: String,
    /// The user to authenticate as.
    #[arg(long, global = true, env = "WARREN_USER", default_value = "guest")]
    user: String,
    /// That user's password.
    #[arg(
        long,
        global = true,
        env = "WARREN_PASSWORD",
        default_value = "guest",
        hide_env_values = true,
        hide_default_value = true
    )]
    password: String,
    /// The virtual host of a per-vhost command [default: /]; without it, listings show every
    /// vhost and export/import take the whole broker's definitions.
    #[arg(long, global = true)]
    vhost: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// The node: name, versions, uptime, listeners, object and message totals, rates.
    Status,
    /// A table of queues, exchanges, bindings, connections, channels, consumers, users, vhosts
    /// or permissions.
    List {
        #[arg(value_enum)]
        what: Listing,
    },
    /// Remove a queue's ready messages.
    Purge { queue: String },
    /// Delete a queue or an exchange.
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Declare a queue, an exchange or a binding.
    #[command(subcommand)]
    Declare(DeclareCommand),
    /// Close a client connection (its name as `list connections` shows it).
    CloseConnection {
        name: String,
        /// The reason the client is given.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write the definitions (users, vhosts, permissions, exchanges, queues, bindings) as JSON
    /// to FILE, or to stdout.
    Export { file: Option<PathBuf> },
    /// Load the definitions in FILE (JSON, as `export` writes it) into the broker.
    Import { file: PathBuf },
    /// Create a user, or change its password and tags.
    AddUser {
        name: String,
        /// (Its id differs from the global --password's: clap would merge the two.)
        #[arg(id = "new_password", value_name = "PASSWORD")]
        password: String,
        /// Tags, comma-separated (administrator, monitoring, management, ...).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Delete a user.
    DeleteUser { name: String },
    /// Set a user's permissions in --vhost.
    SetPermissions {
        #[arg(id = "username", value_name = "USER")]
        user: String,
        /// Regular expression of the resources the user may configure.
        #[arg(long, default_value = ".*")]
        configure: String,
        /// Regular expression of the resources the user may write to.
        #[arg(long, default_value = ".*")]
        write: String,
        /// Regular expression of the resources the user may read from.
        #[arg(long, default_value = ".*")]
        read: String,
    },
    /// Remove a user's permissions in --vhost.
    ClearPermissions {
        #[arg(id = "username", value_name = "USER")]
        user: String,
    },
    /// Create a virtual host.
    AddVhost { name: String },
    /// Delete a virtual host and everything in it.
    DeleteVhost { name: String },
    /// The cluster this node is in.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// This node, its peers, and the Raft groups (metadata, quorum queues): role, term,
    /// leader, log indexes.
    Status,
    /// Add node ID (its cluster port at ADDRESS) to the cluster.
    Join { id: u64, address: String },
    /// Remove node ID from the cluster and from every quorum queue's group.
    Leave { id: u64 },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Listing {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
}

#[derive(Debug, Subcommand)]
enum DeleteCommand {
    /// Delete a queue (and its messages).
    Queue {
        name: String,
        /// Only if it holds no messages.
        #[arg(long)]
        if_empty: bool,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
    },
    /// Delete an exchange (and its bindings).
    Exchange { name: String },
}

#[derive(Debug, Subcommand)]
enum DeclareCommand {
    /// Declare a queue (nothing changes if it exists with the same options).
    Queue {
        name: String,
        /// Survives a restart of the broker.
        #[arg(long)]
        durable: bool,
        /// Deleted when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
        /// An argument, KEY=VALUE (repeatable); integers and true/false are sent as such,
        /// anything else as a string: --arg x-max-length=10 --arg x-queue-mode=lazy.
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = commands::parse_argument)]
        arguments: Vec<(String, Value)>,
    },
    /// Declare an exchange.
    Exchange {
        name: String,
        /// direct, fanout, topic or headers.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// Survives a restart of the broker.
        #[arg(long)]
        durable: bool,
        /// Deleted when its last binding goes.
        #[arg(long)]
        auto_delete: bool,
    },
    /// Bind a queue (or an exchange) to an exchange.
    Binding {
        /// The exchange messages come from.
        #[arg(long)]
        source: String,
        /// The queue (or exchange) they go to.
        #[arg(long)]
        destination: String,
        /// What the destination is.
        #[arg(long, value_enum, default_value = "queue")]
        destination_type: DestinationType,
        /// The binding key (a pattern for topic exchanges).
        #[arg(long, default_value = "")]
        routing_key: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DestinationType {
    Queue,
    Exchange,
}

/// Runs `warren ctl ...`: exit 0 when the command did what it said, 1 (with the API's reason
/// on stderr) when not. Usage errors never get here: clap exits with 2.
pub fn run(args: CtlArgs) -> ExitCode {
    let client = Client::new(&args.url, &args.user, &args.password);
    match dispatch(&client, &args).map(|output| print(output, args.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(client: &Client, args: &CtlArgs) -> Result<Output, CtlError> {
    let vhost = args.vhost.as_deref().unwrap_or("/");
    match &args.command {
        CtlCommand::Status => commands::status(client),
        CtlCommand::List { what } => commands::list(client, *what, args.vhost.as_deref()),
        CtlCommand::Purge { queue } => commands::purge(client, vhost, queue),
        CtlCommand::Delete(what) => commands::delete(client, vhost, what),
        CtlCommand::Declare(what) => commands::declare(client, vhost, what),
        CtlCommand::CloseConnection { name, reason } => {
            commands::close_connection(client, name, reason.as_deref())
        }
        CtlCommand::Export { file } => {
            accounts::export(client, args.vhost.as_deref(), file.as_deref())
        }
        CtlCommand::Import { file } => accounts::import(client, args.vhost.as_deref(), file),
        CtlCommand::AddUser {
            name,
            password,
            tags,
        } => accounts::add_user(client, name, password, tags),
        CtlCommand::DeleteUser { name } => accounts::delete_user(client, name),
        CtlCommand::SetPermissions {
            user,
            configure,
            write,
            read,
        } => accounts::set_permissions(client, vhost, user, [configure, write, read]),
        CtlCommand::ClearPermissions { user } => accounts::clear_permissions(client, vhost, user),
        CtlCommand::AddVhost { name } => accounts::add_vhost(client, name),
        CtlCommand::DeleteVhost { name } => accounts::delete_vhost(client, name),
        CtlCommand::Cluster(ClusterCommand::Status) => commands::cluster_status(client),
        CtlCommand::Cluster(ClusterCommand::Join { id, address }) => {
            commands::cluster_join(client, *id, address)
        }
        CtlCommand::Cluster(ClusterCommand::Leave { id }) => commands::cluster_leave(client, *id),
    }
}

/// Prints a command's outcome on stdout: a table or lines, or with `--json` the API's JSON.
fn print(output: Output, json: bool) {
    match output {
        Output::Table(items, _) | Output::Lines(_, items) | Output::Json(items) if json => {
            tables::print_json(&items)
        }
        Output::Table(items, columns) => println!("{}", tables::table(&items, columns)),
        Output::Lines(pairs, _) => println!("{}", tables::key_values(&pairs)),
        Output::Json(value) => tables::print_json(&value),
        Output::Done(_) if json => {}
        Output::Done(message) => println!("{message}"),
    }
}
