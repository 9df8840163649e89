//! `gallery render-worker` (hidden): the child process the processor renders in
//! (`processor/src/pool.rs`). It limits its own address space first, so a memory blow-up on a
//! hostile file fails this process's allocation instead of the machine's, then serves render
//! requests on stdin/stdout until the processor closes the pipe. Logs go to stderr.

use nix::sys::resource::{Resource, setrlimit};

pub fn run(memory_limit: u64) -> anyhow::Result<()> {
    if memory_limit > 0 {
        setrlimit(Resource::RLIMIT_AS, memory_limit, memory_limit)
            .map_err(|e| anyhow::anyhow!("setting the render worker's memory limit: {e}"))?;
    }
    // If the processor dies (kill -9, the OOM killer), a busy or hung worker must not live on:
    // when this process is re-parented, it exits.
    let parent = nix::unistd::getppid();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if nix::unistd::getppid() != parent {
                std::process::exit(1);
            }
        }
    });
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut input = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
    let mut output = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    gallery_processor::protocol::serve(&mut input, &mut output)?;
    Ok(())
}
