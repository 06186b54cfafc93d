//! The outbox folder: publishes finished files atomically, never clobbering another.

use super::*;

pub(super) fn same_remote_content(sftp: &Sftp, remote: &Path, local: &Path) -> Result<bool> {
    let lm = fs::metadata(local).map_err(|e| ConnectorError::io(local.display(), e))?;
    let rs = sftp
        .stat(remote)
        .map_err(|e| sftp_err("", remote, Fail::Ssh(e)))?;
    if rs.size != Some(lm.len()) {
        return Ok(false);
    }
    let mut rf = sftp
        .open(remote)
        .map_err(|e| sftp_err("", remote, Fail::Ssh(e)))?;
    let mut lf = fs::File::open(local).map_err(|e| ConnectorError::io(local.display(), e))?;
    let (mut rb, mut lb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = rf
            .read(&mut rb)
            .map_err(|e| ConnectorError::io(remote.display(), e))?;
        if n == 0 {
            // The remote is done; equal only if the local file is too.
            let m = lf
                .read(&mut lb[..1])
                .map_err(|e| ConnectorError::io(local.display(), e))?;
            return Ok(m == 0);
        }
        if lf.read_exact(&mut lb[..n]).is_err() || rb[..n] != lb[..n] {
            return Ok(false);
        }
    }
}

pub struct SftpSink {
    conn: Mutex<Conn>,
    root: String,
    overwrite: bool,
    label: String,
}

impl SftpSink {
    pub fn new(cfg: &SftpSinkConfig) -> Result<Self> {
        let problems = cfg.check();
        if !problems.is_empty() {
            return Err(ConnectorError::Config(problems.join("; ")));
        }
        let remote = cfg.remote();
        Ok(Self {
            label: remote.label(),
            conn: Mutex::new(Conn::new(remote)?),
            root: cfg.path.clone(),
            overwrite: cfg.overwrite,
        })
    }
}

impl Sink for SftpSink {
    fn put_file(&self, name: &str, content: &Path) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(ConnectorError::Refused(format!(
                "unsafe file name {name:?}"
            )));
        }
        let root = self.root.as_str();
        let target = join(root, &[name]);
        let tmp = join(root, &[&format!(".{name}.{}.part", std::process::id())]);
        let mut conn = lock(&self.conn);
        let exists = conn.run(|sftp| {
            mkdirs(sftp, Path::new(root))?;
            Ok(sftp.lstat(&target).is_ok())
        })?;
        let same = |conn: &mut Conn| -> Result<bool> {
            let sftp = conn.sftp()?;
            same_remote_content(sftp, &target, content)
        };
        if exists {
            if same(&mut conn)? {
                // Publishing the same file again (a redelivered flow) is fine.
                return Ok(());
            }
            if !self.overwrite {
                return Err(ConnectorError::Refused(format!(
                    "{}{} already exists with other content (set overwrite = true to replace it)",
                    self.label,
                    target.display()
                )));
            }
        }
        let mut src =
            fs::File::open(content).map_err(|e| ConnectorError::io(content.display(), e))?;
        let overwrite = self.overwrite;
        let put = conn.run(|sftp| {
            if overwrite && sftp.lstat(&target).is_ok() {
                // SFTP v3 has no atomic replace: remove, then rename the complete upload in.
                sftp.unlink(&target).map_err(ssh_at(&target))?;
            }
            upload_atomically(sftp, &mut src, &tmp, &target)
        });
        match put {
            Ok(_) => Ok(()),
            // Someone published the same name meanwhile: fine only if it is the same file.
            Err(e) if !overwrite => match same(&mut conn) {
                Ok(true) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
