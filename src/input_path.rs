//! What is wrong with a path given as an input file or folder, in words a user can act on:
//! a FIFO, a device, a folder where a file belongs, a symbolic-link loop or a dangling link
//! are each named as such (a plain "does not exist" would send the user looking in the
//! wrong place).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What an input must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A regular file.
    File,
    /// A folder.
    Folder,
    /// A regular file or a folder.
    FileOrFolder,
}

/// Why `path` cannot be read as `want`, completing "PATH …" (`is a named pipe (FIFO), not a
/// file`), or `None` when it can.
pub fn problem(path: &Path, want: Want) -> Option<String> {
    let wanted = match want {
        Want::File => "a file",
        Want::Folder => "a folder",
        Want::FileOrFolder => "a file or a folder",
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Some("is a loop of symbolic links (a link that leads back to itself)".into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(match std::fs::read_link(path) {
                Ok(target) => format!(
                    "is a symbolic link to {}, which does not exist",
                    target.display()
                ),
                Err(_) => "does not exist".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some("cannot be read (permission denied)".into());
        }
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    let t = meta.file_type();
    let is = if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        if want == Want::File {
            "a folder"
        } else {
            return None;
        }
    } else if want == Want::Folder {
        "a file"
    } else {
        return None;
    };
    Some(format!("is {is}, not {wanted}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_unusable_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        std::os::unix::fs::symlink("gone", d.join("dangling")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let p = |name: &str, want| problem(&d.join(name), want);
        assert_eq!(p("f", Want::File), None);
        assert_eq!(p("f", Want::FileOrFolder), None);
        assert_eq!(p("f", Want::Folder).unwrap(), "is a file, not a folder");
        assert_eq!(problem(d, Want::Folder), None);
        assert_eq!(problem(d, Want::File).unwrap(), "is a folder, not a file");
        assert!(
            p("loop", Want::File)
                .unwrap()
                .contains("loop of symbolic links")
        );
        assert!(
            p("dangling", Want::File)
                .unwrap()
                .contains("link to gone, which does not exist")
        );
        assert_eq!(p("none", Want::File).unwrap(), "does not exist");
        assert_eq!(
            p("fifo", Want::FileOrFolder).unwrap(),
            "is a named pipe (FIFO), not a file or a folder"
        );
        assert_eq!(
            problem(Path::new("/dev/zero"), Want::File).unwrap(),
            "is a device, not a file"
        );
    }
}
