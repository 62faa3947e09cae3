"""Text-to-video and image-to-video, following progress events.

python examples/video.py
python examples/video.py --t2v diffusers:Wan-AI/Wan2.1-T2V-1.3B-Diffusers --i2v diffusers:/models/svd
"""

from __future__ import annotations

import asyncio

from _common import parser, tiny

import mediagen as mg


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--t2v", default=None)
    p.add_argument("--i2v", default=None)
    args = p.parse_args()

    async with mg.Client() as client:
        job = client.submit(
            mg.VideoRequest(prompt="waves on a beach", frames=9, fps=8, width=16, height=16, steps=2, seed=1),
            model=args.t2v or tiny("wan-t2v"),
            timeout=600,
        )
        async for event in job.events():
            if isinstance(event, mg.Progress):
                print(f"text-to-video {event.fraction:.0%}")
        clip = (await job.result()).artifacts[0]
        print(clip, clip.save(args.output / "waves.mp4", overwrite=True))

        # Image-to-video from a frame of the first clip.
        res = await client.video(
            image=clip.to_pil(0), frames=4, fps=8, width=32, height=32, steps=2, seed=2, model=args.i2v or tiny("svd")
        )
        print(res.artifacts[0], res.artifacts[0].save(args.output / "waves-i2v.gif", overwrite=True))


if __name__ == "__main__":
    asyncio.run(main())
