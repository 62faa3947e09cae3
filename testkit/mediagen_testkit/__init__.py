"""What mediagen's own tests, benchmarks and demo need, and apps do not.

Not part of the `mediagen` distribution: it is installed from `testkit/` by the Makefile (and by
`pip install -e ./testkit` for contributors). Apps testing their own code use `mediagen.testing`.

- `mediagen_testkit.tiny`: tiny random-weight pipelines written as real model directories.
- `mediagen_testkit.replicate_server`: a loopback server that speaks Replicate's HTTP API, with faults.
- `mediagen_testkit.media_fixtures`: small, valid media files (PNG, WAV, MP4, GLB ...) for servers.
- `mediagen_testkit.demo`: the offline demo behind `mediagen demo` / `make demo`.
"""

__all__: list[str] = []
