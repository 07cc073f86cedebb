//! berth: the command line of berthd (and of any Docker Engine API).

fn main() {
    eprintln!("berth: not written yet");
    std::process::exit(1);
}
