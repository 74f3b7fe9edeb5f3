//! [`Stream`]: the byte streams a loop can serve.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// A byte stream the loop can watch: a TCP connection, a Unix socket, or any
/// other pollable descriptor (a pipe, a terminal).
///
/// An enum rather than a boxed trait object keeps every connection's stream
/// inline in the slab: no allocation, eight bytes.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection; made non-blocking when attached.
    Tcp(TcpStream),
    /// A Unix-domain stream socket (`UnixStream::pair` in tests); made non-blocking.
    Unix(UnixStream),
    /// Another descriptor, such as a pipe or a terminal. It is used as it is:
    /// the loop reads it only when it is readable, so reads never block, but
    /// writes to it are blocking writes. Use it for sources you read.
    Fd(File),
}

impl Stream {
    pub(crate) fn prepare(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_nonblocking(true)?;
                // Chat lines and echoes are small and latency matters more
                // than packet count: no Nagle delay.
                s.set_nodelay(true)
            }
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Fd(_) => Ok(()),
        }
    }

    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Fd(f) => (&*f).read(buf),
        }
    }

    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
            Stream::Fd(f) => (&*f).write_vectored(bufs),
        }
    }

    /// Closes the write side, telling the peer we are done (FIN), while we
    /// can still read. Descriptors that are not sockets have no such half.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Fd(_) => Ok(()),
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            _ => None,
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Fd(f) => f.as_fd(),
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Unix(s)
    }
}

impl From<File> for Stream {
    fn from(f: File) -> Stream {
        Stream::Fd(f)
    }
}
