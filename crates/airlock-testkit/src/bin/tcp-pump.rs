//! `tcp-pump HOST:PORT`: connects to HOST:PORT with TCP_NODELAY and copies between it
//! and the socket on stdin/stdout, both ways, until the far side closes. A terminal
//! VM's slirp `guestfwd=…-cmd:` runs it per guest connection (its network is
//! `restrict=on`: the broker is the only thing it reaches). `busybox nc` does the same
//! without TCP_NODELAY, and loses tens of milliseconds per USB transfer to Nagle and
//! delayed ACKs.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;

fn main() -> Result<()> {
    let addr = std::env::args()
        .nth(1)
        .context("usage: tcp-pump HOST:PORT")?;
    let far = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    far.set_nodelay(true)?;
    // slirp hands the command one end of a loopback TCP pair as stdin and stdout
    // (libslirp's socketpair "with OOB"): set TCP_NODELAY on it too, or Nagle holds
    // back every short write towards the guest.
    let near = TcpStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let _ = near.set_nodelay(true);
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    let (n2, f2) = (near.try_clone()?, far.try_clone()?);
    std::thread::spawn(move || copy(n2, f2));
    // Far side to guest; when the far side closes, the process exits and the guest's
    // connection ends with it.
    copy(far, near);
    Ok(())
}
