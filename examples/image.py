"""Text-to-image, then image-to-image from the first result.

python examples/image.py                       # tiny local model, offline
python examples/image.py --model diffusers:stabilityai/sdxl-turbo --size 512
"""

from __future__ import annotations

import asyncio

from _common import parser, tiny

import mediagen as mg


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--model", default=None)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()
    model = args.model or tiny("sd")

    async with mg.Client() as client:
        res = await client.image(
            "a red fox in snow",
            model=model,
            n=2,
            seed=7,
            steps=2,
            width=args.size,
            height=args.size,
            negative_prompt="blurry",
        )
        for i, image in enumerate(res.artifacts):
            print(image.save(args.output / f"fox-{i}.png", overwrite=True))
        # The artifact goes straight back in: image-to-image, no file in between.
        edit = await client.image(
            "a red fox in snow, oil painting", image=res.artifacts[0], strength=0.6, model=model, seed=8, steps=2
        )
        print(edit.artifacts[0].save(args.output / "fox-painted.png", overwrite=True))
        for warning in res.warnings + edit.warnings:
            print("warning:", warning)


if __name__ == "__main__":
    asyncio.run(main())
