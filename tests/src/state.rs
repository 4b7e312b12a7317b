//! A temporary state directory for an agent (cache, socket, config), removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{HarnessError, Result};

/// A private temporary directory; removed when dropped unless [`TempState::keep`] is called.
#[derive(Debug)]
pub struct TempState {
    dir: tempfile::TempDir,
}

impl TempState {
    /// A new empty directory under the system temp dir, named `licd-<label>-…`.
    pub fn new(label: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("licd-{label}-"))
            .tempdir()
            .map_err(|e| HarnessError::io("create a temporary state directory", e))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the directory (not created).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.join(name);
        fs::write(&path, contents)
            .map_err(|e| HarnessError::io(format!("write {}", path.display()), e))?;
        Ok(path)
    }

    /// Reads `name` inside the directory as text ("" when it does not exist, for log excerpts).
    pub fn read_to_string_lossy(&self, name: impl AsRef<Path>) -> String {
        read_lossy(&self.join(name))
    }

    /// Keeps the directory after the test (for debugging a failure) and returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// A file's contents as text, lossily; "" when it cannot be read. For failure messages only.
pub(crate) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
