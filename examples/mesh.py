"""Text-to-3D and image-to-3D, saved as GLB and PLY.

python examples/mesh.py
python examples/mesh.py --text diffusers:openai/shap-e --image diffusers:openai/shap-e-img2img
"""

from __future__ import annotations

import asyncio

from _common import parser, tiny

import mediagen as mg


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--text", default=None)
    p.add_argument("--image", default=None)
    args = p.parse_args()

    async with mg.Client() as client:
        chair = await client.mesh("a wooden chair", model=args.text or tiny("shap-e"), steps=2, seed=4)
        mesh = chair.artifacts[0]
        print(mesh, mesh.save(args.output / "chair.glb", overwrite=True))
        print("bounds:", mesh.to_trimesh().bounds.tolist())

        # Image-to-3D from the mesh's own preview render: any image input works here.
        res = await client.mesh(
            image=mesh.preview(64), format="ply", model=args.image or tiny("shap-e-img2img"), steps=2, seed=5
        )
        print(res.artifacts[0], res.artifacts[0].save(args.output / "from-image.ply", overwrite=True))


if __name__ == "__main__":
    asyncio.run(main())
