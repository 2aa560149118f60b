#!/usr/bin/env python
"""Drive the web demo in headless Chromium as a user would: open the page, upload an image, press Segment, wait
for the mask and the cut-out, and (optionally) save a screenshot. tests/test_demo.py uses the same functions.

  python scripts/demo_screenshot.py --url http://127.0.0.1:7860 --image photo.jpg --out docs/demo.png
  python scripts/demo_screenshot.py --ckpt best.pth --depth_model small --image photo.jpg --out docs/demo.png

With --ckpt the demo is started here (``pdfnet demo``'s own code) on a free port and stopped at the end. Needs
Debian's ``chromium`` and ``chromium-driver`` (or any Chrome + chromedriver on PATH) and ``pip install selenium``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path

OUTPUTS = ("mask", "cutout", "depth")


def find_browser() -> tuple[str, str] | None:
    """(browser binary, chromedriver) found on this machine, or None."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive_in_browser(url: str, image: str | Path, screenshot: str | Path | None = None, timeout: float = 180,
                     size: tuple[int, int] = (1500, 900), depth: str | Path | None = None) -> dict[str, str]:
    """Upload ``image`` (and ``depth``, when given) on the demo page at ``url``, press Segment, wait until every
    output shows an image.

    Returns {output elem_id: the image's src}. Raises TimeoutError naming the outputs that never appeared.
    """
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    found = find_browser()
    if found is None:
        raise RuntimeError("no Chromium/chromedriver found (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#input-image input[type=file]"))
        upload.send_keys(str(Path(image).resolve()))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        if depth is not None:
            driver.find_element(By.CSS_SELECTOR, "#input-depth input[type=file]").send_keys(str(Path(depth).resolve()))
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-depth img"))
        driver.find_element(By.CSS_SELECTOR, "#segment").click()

        def shown(d):
            srcs = {}
            for name in OUTPUTS:
                images = d.find_elements(By.CSS_SELECTOR, f"#{name} img")
                # decoded and drawn, not just referenced
                if images and images[0].get_attribute("src") and images[0].get_property("naturalWidth"):
                    srcs[name] = images[0].get_attribute("src")
            return srcs if len(srcs) == len(OUTPUTS) else False

        try:
            result = wait.until(shown)
        except TimeoutException as err:
            missing = [n for n in OUTPUTS if not driver.find_elements(By.CSS_SELECTOR, f"#{n} img")]
            raise TimeoutError(f"after {timeout:.0f} s the demo shows no {', '.join(missing)} image") from err
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return result
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, required=True, help="the image to upload")
    p.add_argument("--depth", type=Path, default=None, help="its depth map to upload (else Depth Anything's)")
    p.add_argument("--out", type=Path, default=None, help="where to save the screenshot (PNG)")
    p.add_argument("--url", default=None, help="a running demo; without it, --ckpt starts one")
    p.add_argument("--ckpt", default=None, help="start the demo with this checkpoint (pdfnet demo --ckpt)")
    p.add_argument("--depth_model", default="large", help="with --ckpt: the demo's --depth_model")
    args = p.parse_args(argv)
    if not args.url and not args.ckpt:
        p.error("pass --url of a running demo or --ckpt to start one")
    demo = None
    url = args.url
    if url is None:
        from pdfnet.cli.demo import build, parse_args

        demo, _ = build(parse_args(["--ckpt", args.ckpt, "--depth_model", args.depth_model, "--device", "cpu"]))
        if demo is None:
            return 2
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}"
    try:
        srcs = drive_in_browser(url, args.image, args.out, depth=args.depth)
    finally:
        if demo is not None:
            demo.close()
    print(f"the page shows {', '.join(srcs)}" + (f"; screenshot {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
