//! Commands that open the store directly: `admin-key` and `master-key rotate`. Both work
//! before a server ever ran and while servers run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use keygate_api::platform_keys::{create_platform_key, system_audit, KeySettings, NewPlatformKey};
use keygate_api::vault::{rotate_master_key, VaultService};
use keygate_store::Store;
use keygate_types::{PlatformKeyType, DEFAULT_WORKSPACE};
use keygate_vault::master::{load_master_key, write_key_file};
use keygate_vault::{MasterKey, MasterKeySource};
use zeroize::Zeroizing;

use crate::StoreArgs;

#[derive(clap::Args)]
pub struct AdminKeyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Workspace of the key; without it the key is an organisation admin of every workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Description shown in key lists.
    #[arg(long, default_value = "created by keygate admin-key")]
    pub description: String,
}

#[derive(clap::Subcommand)]
pub enum MasterKeyCommand {
    /// Re-wrap every data key under a new master key (servers keep serving meanwhile).
    Rotate(RotateArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// File holding the new master key (base64 of 32 bytes); generated there (mode 0600) when
    /// missing. Default with the generated data-directory key: DATA_DIR/master.key.next,
    /// which replaces DATA_DIR/master.key when the rotation is done.
    #[arg(long)]
    pub new_key_file: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn env_master_key() -> Option<Zeroizing<String>> {
    std::env::var("KEYGATE_MASTER_KEY").ok().map(Zeroizing::new)
}

fn env_master_key_file() -> Option<PathBuf> {
    std::env::var_os("KEYGATE_MASTER_KEY_FILE").map(PathBuf::from)
}

/// Loads the master key for a store in `data_dir`; generates one into it when allowed.
pub fn master_key_for(data_dir: &Path, generate: bool) -> anyhow::Result<(MasterKey, MasterKeySource)> {
    let (key, source, generated) = load_master_key(env_master_key(), env_master_key_file(), data_dir, generate)?;
    if generated {
        tracing::warn!(
            path = %data_dir.join(keygate_vault::master::DATA_DIR_KEY_FILE).display(),
            "no KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE given: generated a master key into the data \
             directory. Anyone who can read it can read every stored secret; keep it apart from backups of the store"
        );
        eprintln!(
            "keygate: warning: generated a master key in {} (mode 0600). Set KEYGATE_MASTER_KEY or \
             KEYGATE_MASTER_KEY_FILE in production.",
            data_dir.join(keygate_vault::master::DATA_DIR_KEY_FILE).display()
        );
    }
    Ok((key, source))
}

pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    if args.database_url.is_none() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
        // The store holds sealed secrets and key hashes: readable by its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    keygate_store::open(&args.url()).await.context("cannot open the store")
}

pub async fn admin_key(args: AdminKeyArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store).await?;
    let (key, _) = master_key_for(&args.store.data_dir, true)?;
    let vault = VaultService::bootstrap(store.as_ref(), key).await?;
    let workspace = args.workspace.clone().unwrap_or_else(|| DEFAULT_WORKSPACE.to_string());
    if args.workspace.is_some() {
        store
            .get_workspace(&workspace)
            .await
            .with_context(|| format!("workspace {workspace} does not exist"))?;
    }
    let (row, secret) = create_platform_key(
        store.as_ref(),
        &vault,
        NewPlatformKey {
            workspace: &workspace,
            key_type: PlatformKeyType::Admin,
            org_admin: args.workspace.is_none(),
            description: &args.description,
            settings: KeySettings::default(),
            expires_at: None,
            created_by: Some("keygate admin-key".into()),
        },
        Some(system_audit(
            &workspace,
            "admin-key-command",
            "api_key.create",
            "api_key",
        )),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(key_id = %row.id, "ADMIN key created by keygate admin-key");
    println!("{}", secret.expose());
    store.close().await;
    Ok(())
}

pub async fn master_key(cmd: MasterKeyCommand) -> anyhow::Result<()> {
    match cmd {
        MasterKeyCommand::Rotate(args) => rotate(args).await,
    }
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store).await?;
    let (old, source) = master_key_for(&args.store.data_dir, false)?;
    let new_path = match (&args.new_key_file, &source) {
        (Some(p), _) => p.clone(),
        (None, MasterKeySource::DataDir(p)) => p.with_extension("key.next"),
        (None, other) => anyhow::bail!(
            "the current master key comes from {}; pass --new-key-file PATH (the new key is read from it, or \
             generated into it when the file does not exist) and set that key in place of the old one afterwards",
            other.describe()
        ),
    };
    // The new key is on disk before any secret is wrapped under it, so an interrupted
    // rotation can be resumed with the same command.
    let new = if new_path.exists() {
        let text = Zeroizing::new(
            std::fs::read_to_string(&new_path).with_context(|| format!("cannot read {}", new_path.display()))?,
        );
        MasterKey::from_base64(&text)?
    } else {
        let key = MasterKey::generate();
        write_key_file(&new_path, &key)?;
        key
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("re-wrapping data keys {bar:40} {pos}/{len} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let progress_bar = bar.clone();
    let progress = move |done: u64, total: u64| {
        progress_bar.set_length(total);
        progress_bar.set_position(done);
    };
    let report = rotate_master_key(store.as_ref(), old, new.clone(), &progress).await?;
    bar.finish();
    if let MasterKeySource::DataDir(current) = &source {
        if args.new_key_file.is_none() {
            write_key_file(current, &new)?;
            let _ = std::fs::remove_file(&new_path);
        }
    }
    eprintln!(
        "keygate: master key rotated from version {} to version {}; {} data keys re-wrapped.",
        report.from_version, report.to_version, report.rewrapped
    );
    match &source {
        MasterKeySource::DataDir(p) if args.new_key_file.is_none() => {
            eprintln!(
                "keygate: the new key is in {}. Restart running servers to use it.",
                p.display()
            )
        }
        _ => eprintln!(
            "keygate: the new key is in {}. Give it to every server (KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE) \
             and restart them: the old key is retired and no longer starts keygate.",
            new_path.display()
        ),
    }
    store.close().await;
    Ok(())
}
