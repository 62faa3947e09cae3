"""The same code on a local GPU or a hosted API: only the model string changes.

python examples/local_or_hosted.py --where local     # tiny local diffusers model
python examples/local_or_hosted.py --where hosted    # Replicate; offline: a loopback server
REPLICATE_API_TOKEN=r8_... python examples/local_or_hosted.py --where hosted --real
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from _common import parser, tiny

import mediagen as mg

HOSTED = "replicate:black-forest-labs/flux-schnell"


async def draw(client: mg.Client, model: str) -> mg.Result:
    # Nothing in here knows or cares where the model runs.
    return await client.image(
        "a lighthouse at dusk",
        model=model,
        n=2,
        seed=11,
        aspect_ratio="1:1",
        options={} if model.startswith("diffusers:") else {"output_quality": 90},
    )


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--where", choices=["local", "hosted"], default="local")
    p.add_argument("--real", action="store_true", help="use the real Replicate API (needs REPLICATE_API_TOKEN)")
    args = p.parse_args()

    with contextlib.ExitStack() as stack:
        providers: dict[str, dict[str, Any]] = {}
        if args.where == "hosted" and not args.real:
            from mediagen_testkit.replicate_server import ReplicateServer

            server = stack.enter_context(ReplicateServer(time_scale=0.01))
            providers["replicate"] = {"base_url": server.url, "api_token": server.token}
        model = HOSTED if args.where == "hosted" else tiny("sd")
        async with mg.Client(providers=providers) as client:
            res = await draw(client, model)
        for i, image in enumerate(res.artifacts):
            print(res.model_string, image.save(args.output / f"lighthouse-{args.where}-{i}.png", overwrite=True))
        for warning in res.warnings:
            print("warning:", warning)


if __name__ == "__main__":
    asyncio.run(main())
