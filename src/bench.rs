//! `gallery bench <dir>`: renders the four versions of every image in a directory on one
//! thread, `--runs` times each, and prints per-image medians, the overall median and peak
//! memory. For JPEGs it also times a full-size libjpeg-turbo decode alone (no scaling, no
//! resize, no encode), interleaved with the renders, as the floor a render is compared with.
//! With `--via-worker` every render is also timed through a render worker process (the
//! processor's way: bytes over a pipe, versions back), interleaved, to show what the process
//! boundary costs.
//! Contract: the last line reads
//! `render: N photos, median X ms/photo, Y photos/s/core` with Y = 1000 / X.

use std::time::Instant;

use gallery_processor::Limits;

use crate::cli::BenchArgs;

fn median(sorted: &mut [f64]) -> f64 {
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Peak resident memory of this process (VmHWM), in MiB, where the OS reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A `gallery render-worker` child and its buffered pipes (`--via-worker`).
type WorkerPipe = (
    std::process::Child,
    std::io::BufWriter<std::process::ChildStdin>,
    std::io::BufReader<std::process::ChildStdout>,
);

fn spawn_worker() -> anyhow::Result<WorkerPipe> {
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("render-worker")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    gallery_processor::protocol::widen_pipe(&stdin);
    gallery_processor::protocol::widen_pipe(&stdout);
    let stdin = std::io::BufWriter::with_capacity(1 << 16, stdin);
    let stdout = std::io::BufReader::with_capacity(1 << 16, stdout);
    Ok((child, stdin, stdout))
}

/// One file's medians over the runs: the render (`None` when refused), libjpeg-turbo's full
/// decode alone (JPEGs), and the render through the worker.
struct FileTimes {
    render: Option<f64>,
    decode: Option<f64>,
    worker: Option<f64>,
}

fn measure(
    path: &std::path::Path,
    runs: usize,
    limits: Limits,
    mut worker: Option<&mut WorkerPipe>,
) -> anyhow::Result<FileTimes> {
    let bytes = std::fs::read(path)?;
    let (mut times, mut decodes, mut via_worker) = (Vec::new(), Vec::new(), Vec::new());
    let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
    let mut outcome = String::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let result = gallery_processor::render(&bytes, limits);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        outcome = match result {
            Ok(r) => format!("{}x{}", r.upright.width, r.upright.height),
            Err(e) => format!("refused: {} ({})", e.code, e.message),
        };
        if let Some((_, stdin, stdout)) = worker.as_deref_mut() {
            let started = Instant::now();
            gallery_processor::protocol::write_request(stdin, limits, &bytes)?;
            let _ = gallery_processor::protocol::read_response(stdout)?;
            via_worker.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        if is_jpeg && !outcome.starts_with("refused") {
            let started = Instant::now();
            if gallery_processor::render::turbo::decode_rgb(&bytes, 8).is_ok() {
                decodes.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let m = median(&mut times);
    let decode = (!decodes.is_empty()).then(|| median(&mut decodes));
    let note = decode.map_or(String::new(), |d| format!("(full decode alone {d:.1} ms)"));
    println!("{:>9.1} ms  {:<14} {} {note}", m, outcome, path.display());
    let refused = outcome.starts_with("refused");
    Ok(FileTimes {
        render: (!refused).then_some(m),
        decode,
        worker: (!refused && !via_worker.is_empty()).then(|| median(&mut via_worker)),
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(&args.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let limits = Limits {
        max_pixels: args.max_pixels,
        ..Limits::default()
    };
    let mut worker = if args.via_worker {
        Some(spawn_worker()?)
    } else {
        None
    };
    let (mut per_image, mut per_decode, mut per_worker) = (Vec::new(), Vec::new(), Vec::new());
    for path in &files {
        let t = measure(path, args.runs, limits, worker.as_mut())?;
        per_image.extend(t.render);
        per_decode.extend(t.decode);
        per_worker.extend(t.worker);
    }
    if let Some((mut child, stdin, _)) = worker.take() {
        drop(stdin);
        let _ = child.wait();
    }
    if let Some(peak) = peak_rss_mib() {
        println!("peak memory: {peak:.0} MiB");
    }
    if !per_decode.is_empty() {
        let n = per_decode.len();
        let d = median(&mut per_decode);
        println!("libjpeg-turbo full decode alone: {n} JPEGs, median {d:.1} ms/photo");
    }
    let n = per_image.len();
    let m = median(&mut per_image.clone());
    if !per_worker.is_empty() {
        let w = median(&mut per_worker);
        println!(
            "render via a worker process: {} photos, median {w:.1} ms/photo ({:+.1} % against in-process)",
            per_worker.len(),
            (w / m - 1.0) * 100.0
        );
    }
    let rate = if m > 0.0 { 1000.0 / m } else { 0.0 };
    println!("render: {n} photos, median {m:.1} ms/photo, {rate:.2} photos/s/core");
    Ok(())
}
