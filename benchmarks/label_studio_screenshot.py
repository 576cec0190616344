"""The picture of docs/label-studio.md: Label Studio's labelling page with a brush mask from is5net.

Starts a throw-away Label Studio (``.venv-label-studio``, as tests/test_label_studio.py does), a project with
the documented labelling config and one photo, ``is5net serve --label-studio`` with the models given after
``--``, connects it as the project's interactive model, asks for the mask of a rectangle as the labelling page
does, saves rectangle + mask as the annotation, and photographs the task's page in Chromium (Playwright)::

    python benchmarks/label_studio_screenshot.py --out docs/label_studio.png -- --stage1 grabcut --refiner none

(the picture in docs/ was made so: no SAM or DIS-SAM weights on that machine; with them, pass
``-- --checkpoint dis-sam --sam-checkpoint vit_l``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the Label Studio and is5net servers the tests start

from label_studio_support import LABEL_CONFIG, PASSWORD, USER, LabelStudioServer, upload_task  # noqa: E402
from test_serve_support import RunningServer  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/label_studio.png"))
    parser.add_argument("--image", type=Path, default=None, help="the photo (default: skimage's rocket, 640x427)")
    parser.add_argument(
        "--rect", default="46.5,29,7.5,67", help="the drawn rectangle in percent of the image: x,y,width,height"
    )
    parser.add_argument("--label", default="Object")
    parser.add_argument("serve", nargs="*", help="is5net serve's model options, after --")
    args = parser.parse_args()
    args.serve = args.serve or ["--stage1", "grabcut", "--refiner", "none"]
    return args


def photo(path: Path | None, folder: Path) -> Path:
    if path is not None:
        return path
    from skimage import data

    out = folder / "rocket.png"
    Image.fromarray(np.asarray(data.rocket())).save(out)
    return out


def rectangle_region(rect: list[float], label: str, image: Path) -> dict:
    w, h = Image.open(image).size
    x, y, rw, rh = rect
    value = {"x": x, "y": y, "width": rw, "height": rh, "rotation": 0, "rectanglelabels": [label]}
    return {"id": "drawn-box", "type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0, "value": value}  # fmt: skip


def annotate(ls_url: str, token: str, image: Path, region: dict, serve: list[str]) -> tuple[int, int, dict]:
    """Project, task, model server, one interactive prediction stored as the annotation: (project, task, result)."""
    from label_studio_sdk import LabelStudio

    admin = LabelStudio(base_url=ls_url, api_key=token)
    personal = admin.tokens.create().token
    project = admin.projects.create(title="is5net", label_config=LABEL_CONFIG)
    task = upload_task(admin, project.id, image)
    os.environ.update(LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=personal)
    with RunningServer([*serve, "--device", "cpu", "-q", "--label-studio"]) as server:
        ml = admin.ml.create(project=project.id, url=f"{server.url}/label-studio", is_interactive=True, title="is5net")
        r = admin.ml.with_raw_response.predict_interactive(ml.id, task=task["id"], context={"result": [region]})
        answer = r.response.json()
    if "data" not in answer:
        raise SystemExit(f"no mask: {answer}")
    (mask,) = answer["data"]["result"]
    admin.annotations.create(id=task["id"], result=[region, mask])
    return project.id, task["id"], mask


def photograph(ls_url: str, project: int, task: int, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 860}, device_scale_factor=1)
        page.goto(f"{ls_url}/user/login/")
        page.fill("input[name=email]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
        page.goto(f"{ls_url}/projects/{project}/data?task={task}")
        page.wait_for_selector("canvas", timeout=120_000)
        page.wait_for_timeout(5000)  # the image, then the regions, are drawn after the page settles
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    args = arguments()
    rect = [float(v) for v in args.rect.split(",")]
    with tempfile.TemporaryDirectory(prefix="ls-shot-") as tmp:
        image = photo(args.image, Path(tmp))
        with LabelStudioServer(Path(tmp) / "label_studio") as ls:
            project, task, mask = annotate(
                ls.url, ls.token, image, rectangle_region(rect, args.label, image), args.serve
            )
            photograph(ls.url, project, task, args.out)
    print(f"{args.out}: task {task}, mask score {mask['score']}, models: is5net serve {' '.join(args.serve)}")


if __name__ == "__main__":
    main()
