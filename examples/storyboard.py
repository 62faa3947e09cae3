"""A storyboard: scene prompts → images → clips → one soundtrack → one MP4 with sound.

Every step of a stage runs concurrently (asyncio.gather); artifacts flow from one request into the
next without files in between; one line of progress per event covers the whole chain.

    python examples/storyboard.py
    python examples/storyboard.py --image replicate:black-forest-labs/flux-schnell --clip replicate:minimax/video-01
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from _common import parser, tiny

import mediagen as mg

SCENES = ["a fox wakes in its den", "the fox trots across the snow", "the fox watches the sunset"]


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--image", default=None)
    p.add_argument("--clip", default=None)
    p.add_argument("--music", default=None)
    args = p.parse_args()
    image_model = args.image or tiny("sd")
    clip_model = args.clip or tiny("svd")
    music_model = args.music or tiny("musicgen", "transformers")

    def show(stage: str) -> Callable[[mg.Event], None]:
        def on_event(event: mg.Event) -> None:
            if isinstance(event, (mg.Started, mg.Completed, mg.Failed)):
                print(f"[{stage}] {type(event).__name__}")

        return on_event

    async with mg.Client() as client:
        # 1. One key image per scene, all at once.
        stills = await asyncio.gather(
            *(
                client.image(
                    scene, model=image_model, width=32, height=32, steps=2, seed=i, on_event=show(f"image {i}")
                )
                for i, scene in enumerate(SCENES)
            )
        )
        # 2. Each still becomes a clip (image-to-video).
        clips = await asyncio.gather(
            *(
                client.video(
                    scene,
                    image=still.artifacts[0],
                    frames=4,
                    fps=4,
                    width=32,
                    height=32,
                    steps=2,
                    seed=i,
                    model=clip_model,
                    on_event=show(f"clip {i}"),
                )
                for i, (scene, still) in enumerate(zip(SCENES, stills, strict=True))
            )
        )
        film = mg.concat([c.artifacts[0] for c in clips])
        # 3. A soundtrack as long as the film, then both into one file.
        music = await client.audio(
            "gentle winter theme",
            kind="music",
            duration_s=film.duration_s,
            seed=1,
            model=music_model,
            on_event=show("music"),
        )
        final = mg.mux(film, music.artifacts[0])
        print(
            f"{len(SCENES)} scenes, {film.num_frames} frames, {film.duration_s:.1f} s:",
            final.save(args.output / "storyboard.mp4", overwrite=True),
        )


if __name__ == "__main__":
    asyncio.run(main())
