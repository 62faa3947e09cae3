"""Music and speech, saved as WAV and FLAC.

python examples/audio.py
python examples/audio.py --music transformers:facebook/musicgen-small --speech transformers:facebook/mms-tts-eng
"""

from __future__ import annotations

import asyncio

from _common import parser, tiny

import mediagen as mg


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--music", default=None)
    p.add_argument("--speech", default=None)
    args = p.parse_args()

    async with mg.Client() as client:
        music, speech = await asyncio.gather(
            client.audio(
                "calm piano", kind="music", duration_s=1.0, seed=3, model=args.music or tiny("musicgen", "transformers")
            ),
            client.audio("Hello from mediagen.", kind="speech", model=args.speech or tiny("vits", "transformers")),
        )
        track = music.artifacts[0]
        print(track, f"{track.loudness_dbfs():.1f} dBFS", track.save(args.output / "piano.wav", overwrite=True))
        print(speech.artifacts[0], speech.artifacts[0].normalize().save(args.output / "hello.flac", overwrite=True))


if __name__ == "__main__":
    asyncio.run(main())
