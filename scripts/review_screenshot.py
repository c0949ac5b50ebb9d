"""Screenshot of a running `femurseg review` page (headless Chromium driven by Playwright).

    python scripts/review_screenshot.py URL OUT.png [--slice N] [--width 1400 --height 860]

With --slice it first clicks entry N (0 = the least certain) of the "slices to check" list.
Used for the README's pictures in docs/review/; needs Debian's chromium and `pip install
playwright` (Playwright drives the system Chromium; it cannot download browsers here).
"""

from __future__ import annotations

import argparse
import shutil
import time

from playwright.sync_api import sync_playwright


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--slice", type=int, default=None)
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=860)
    p.add_argument("--wait", type=float, default=5.0, help="seconds for the views to settle")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.set_default_timeout(60_000)
            page.goto(args.url)
            page.wait_for_selector("#views img.image-display-area")
            time.sleep(args.wait)
            if args.slice is not None:
                page.locator("#slices-to-check .slice-item").nth(args.slice).click()
                time.sleep(2.0)
            page.screenshot(path=args.out)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
