//! `berth-shim`: parses the command line and hands over to the library.

fn main() {
    let code = match berth_shim::options::Options::parse(std::env::args_os().skip(1)) {
        Ok(opts) => berth_shim::daemon::run(opts),
        Err(e) => {
            eprintln!("berth-shim: {e}");
            2
        }
    };
    std::process::exit(code);
}
