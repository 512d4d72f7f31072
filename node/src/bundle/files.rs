//! Bundles on disk: one file, a named pipe (`pack -o -` streams through one), or volumes
//! `FILE.000`, `FILE.001`, … of a given size (`pack --split`) for removable media. The
//! volumes are the one tar cut at byte boundaries: read together they are the bundle, and
//! while later ones are missing they read as a bundle cut short (so `unpack --resume`
//! takes in each volume as it arrives).

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use commons_protocol::archive::{Archive, Volumes};

use crate::error::{ApiError, ErrorKind};

/// Most volumes a bundle may be split into (three digits).
pub const MAX_VOLUMES: usize = 1000;
/// Smallest volume size `--split` accepts.
pub const MIN_VOLUME_BYTES: u64 = 1 << 20;

/// An opened bundle, from one file or its volumes.
pub type BundleFile = Archive<Volumes<File>>;

/// The base name of volume `path` (`b.tar` of `b.tar.007`), if it is one.
fn volume_base(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (base, number) = name.rsplit_once('.')?;
    (number.len() == 3 && number.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty())
        .then(|| path.with_file_name(base))
}

/// Volume `i` of the bundle `base`.
fn volume(base: &Path, i: usize) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{i:03}"));
    PathBuf::from(name)
}

/// The files of the bundle named `path`: `path` itself, or, when it names a volume or
/// only volumes exist, every volume from `.000` on up to the first missing one.
pub fn volume_paths(path: &Path) -> io::Result<Vec<PathBuf>> {
    let base = match volume_base(path) {
        Some(base) if volume(&base, 0).is_file() => base,
        _ if path.is_file() => return Ok(vec![path.to_path_buf()]),
        _ => path.to_path_buf(),
    };
    let paths: Vec<PathBuf> = (0..MAX_VOLUMES)
        .map(|i| volume(&base, i))
        .take_while(|p| p.is_file())
        .collect();
    if paths.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{}: no such bundle (nor volumes {})",
                path.display(),
                volume(&base, 0).display()
            ),
        ));
    }
    Ok(paths)
}

/// Opens the bundle at `path` (a file, or the volumes of one) and reads its index.
pub fn open(path: &Path) -> Result<BundleFile, ApiError> {
    let io_error =
        |p: &Path, e: io::Error| ApiError::new(ErrorKind::Io, format!("{}: {e}", p.display()));
    let mut parts = Vec::new();
    for p in volume_paths(path).map_err(|e| ApiError::new(ErrorKind::NotFound, e.to_string()))? {
        let file = File::open(&p).map_err(|e| io_error(&p, e))?;
        let len = file.metadata().map_err(|e| io_error(&p, e))?.len();
        // Every volume but the last is as long as the first: a shorter one is still
        // arriving, and what follows it cannot be placed yet (the bundle reads as cut
        // there).
        let short = parts
            .first()
            .is_some_and(|(_, first): &(File, u64)| len < *first);
        parts.push((file, len));
        if short {
            break;
        }
    }
    let volumes = Volumes::new(parts);
    let len = volumes.len();
    Archive::open(volumes, len).map_err(|e| ApiError::from(e).context(path.display()))
}

/// Writes a bundle to `output` with `write`: into a named pipe directly; into a file
/// through `FILE.partial`, synced and renamed once whole; with `split`, into volumes of
/// that many bytes, each synced and renamed once all are whole. Returns what `write`
/// returned and the files written.
pub fn write_bundle<T>(
    output: &Path,
    split: Option<u64>,
    force: bool,
    write: impl FnOnce(&mut dyn Write) -> Result<T, ApiError>,
) -> Result<(T, Vec<PathBuf>), ApiError> {
    let io_error =
        |p: &Path, e: io::Error| ApiError::new(ErrorKind::Io, format!("{}: {e}", p.display()));
    if is_fifo(output) {
        let mut pipe = BufWriter::new(File::create(output).map_err(|e| io_error(output, e))?);
        let value = write(&mut pipe)?;
        pipe.flush().map_err(|e| io_error(output, e))?;
        return Ok((value, vec![output.to_path_buf()]));
    }
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    // The other form of the same bundle name would be read instead of (or beside) this
    // one: a single file `FILE` is read before volumes `FILE.000…`.
    let (first, other) = match split {
        Some(_) => (volume(output, 0), output.to_path_buf()),
        None => (output.to_path_buf(), volume(output, 0)),
    };
    for taken in [&first, &other] {
        if exists(taken) && !force {
            return Err(ApiError::new(
                ErrorKind::AlreadyExists,
                format!("{} exists (--force replaces it)", taken.display()),
            ));
        }
    }
    if let Some(size) = split {
        if size < MIN_VOLUME_BYTES {
            return Err(ApiError::new(
                ErrorKind::InvalidInput,
                format!("--split {size}: volumes must hold at least {MIN_VOLUME_BYTES} bytes"),
            ));
        }
    }
    let mut out = Partials {
        base: output.to_path_buf(),
        split,
        written: Vec::new(),
        current: None,
        in_current: 0,
    };
    let value = match write(&mut out).and_then(|v| out.finish().map(|()| v)) {
        Ok(value) => value,
        Err(e) => {
            out.remove();
            return Err(e);
        }
    };
    let finals = out.rename()?;
    // With --force: what remains of an earlier bundle of that name (a single file, or
    // volumes past this bundle's last) would be read as, or as part of, this one.
    let kept = if split.is_some() { finals.len() } else { 0 };
    if split.is_some() && exists(output) {
        std::fs::remove_file(output).map_err(|e| io_error(output, e))?;
    }
    for stale in (kept..MAX_VOLUMES).map(|i| volume(output, i)) {
        if !exists(&stale) {
            break;
        }
        std::fs::remove_file(&stale).map_err(|e| io_error(&stale, e))?;
    }
    Ok((value, finals))
}

/// Whether `path` is a named pipe.
fn is_fifo(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        path.metadata().is_ok_and(|m| m.file_type().is_fifo())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The `.partial` files a bundle is written to before they are renamed.
struct Partials {
    base: PathBuf,
    split: Option<u64>,
    /// Final names of the files begun, in order.
    written: Vec<PathBuf>,
    current: Option<BufWriter<File>>,
    in_current: u64,
}

impl Partials {
    fn partial(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    }

    /// Syncs the file being written and starts the next.
    fn next_file(&mut self) -> io::Result<()> {
        self.close_current()?;
        let path = match self.split {
            Some(_) if self.written.len() >= MAX_VOLUMES => {
                return Err(io::Error::other(format!(
                    "the bundle needs more than {MAX_VOLUMES} volumes: pick a larger --split"
                )))
            }
            Some(_) => volume(&self.base, self.written.len()),
            None => self.base.clone(),
        };
        let file = File::create(Self::partial(&path))?;
        self.written.push(path);
        self.current = Some(BufWriter::with_capacity(1 << 20, file));
        self.in_current = 0;
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some(mut current) = self.current.take() {
            current.flush()?;
            current.get_ref().sync_all()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ApiError> {
        if self.written.is_empty() {
            self.next_file().map_err(|e| self.error(e))?;
        }
        self.close_current().map_err(|e| self.error(e))
    }

    fn rename(&self) -> Result<Vec<PathBuf>, ApiError> {
        for path in &self.written {
            std::fs::rename(Self::partial(path), path).map_err(|e| self.error(e))?;
        }
        Ok(self.written.clone())
    }

    fn remove(&mut self) {
        self.current = None;
        for path in &self.written {
            let _ = std::fs::remove_file(Self::partial(path));
        }
    }

    fn error(&self, e: io::Error) -> ApiError {
        let path = self.written.last().unwrap_or(&self.base);
        ApiError::new(ErrorKind::Io, format!("{}: {e}", path.display()))
    }
}

impl Write for Partials {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = self.split.is_some_and(|size| self.in_current >= size);
        if self.current.is_none() || full {
            self.next_file()?;
        }
        let room = self
            .split
            .map_or(buf.len() as u64, |size| size - self.in_current);
        let n = (buf.len() as u64).min(room) as usize;
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no volume open"));
        };
        let n = current.write(&buf[..n])?;
        self.in_current += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(current) => current.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_named_and_found_in_order() {
        let dir = tempfile::tempdir().expect("test step");
        let base = dir.path().join("b.tar");
        let ((), files) = write_bundle(&base, Some(MIN_VOLUME_BYTES), false, |w| {
            w.write_all(&vec![7u8; (2 * MIN_VOLUME_BYTES + 5) as usize])
                .map_err(|e| ApiError::new(ErrorKind::Io, e.to_string()))
        })
        .expect("test step");
        assert_eq!(files.len(), 3);
        assert_eq!(files[2], dir.path().join("b.tar.002"));
        assert_eq!(std::fs::metadata(&files[2]).expect("test step").len(), 5);
        for name in [&base, &files[0], &files[1]] {
            assert_eq!(volume_paths(name).expect("test step"), files, "{name:?}");
        }
        // Again, smaller, with --force: the stale third volume goes.
        assert!(write_bundle(&base, Some(MIN_VOLUME_BYTES), false, |_| Ok(())).is_err());
        write_bundle(&base, Some(MIN_VOLUME_BYTES), true, |w| {
            w.write_all(&[1; 10])
                .map_err(|e| ApiError::new(ErrorKind::Io, e.to_string()))
        })
        .expect("test step");
        assert_eq!(volume_paths(&base).expect("test step").len(), 1);
        // A failed write leaves nothing behind.
        let other = dir.path().join("c.tar");
        let failed: Result<((), _), _> = write_bundle(&other, None, false, |w| {
            w.write_all(b"half").expect("test step");
            Err(ApiError::new(ErrorKind::Io, "cut"))
        });
        assert!(failed.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("test step")
            .map(|e| e.expect("test step").file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("b.tar.000")]);
    }
}
