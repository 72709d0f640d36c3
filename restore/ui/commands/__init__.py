"""One module per `mp3restore` subcommand that is more than a call into the library."""
