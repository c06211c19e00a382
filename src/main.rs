fn main() -> std::process::ExitCode {
    hookd::main()
}
