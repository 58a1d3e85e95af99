fn main() {
    std::process::exit(faultd::cli::run());
}
