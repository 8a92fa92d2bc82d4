//! Draws the detected face boxes on the fixture photo (for checking by eye).
use mpfnet_stages::prep::face::FaceCropper;
use mpfnet_stages::prep::image::{load_frame, save_png};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let input = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("tests/fixtures/rustface_test.png");
    let out = args.get(2).map(String::as_str).unwrap_or("/tmp/faces.png");
    let mut f = mpfnet_stages::prep::pattern::remove_colour_marks(&load_frame(input)?); // the fixture ships with red boxes drawn
    let fc = FaceCropper {
        detect_max_side: 4096,
        min_face: 20,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let faces = fc.detect(&f);
    eprintln!("{} faces in {:?}", faces.len(), t.elapsed());
    for b in &faces {
        println!(
            "{:.0} {:.0} {:.0} {:.0} score {:.2}",
            b.x, b.y, b.width, b.height, b.score
        );
        let (x0, y0) = (b.x.max(0.0) as usize, b.y.max(0.0) as usize);
        let (x1, y1) = (
            ((b.x + b.width) as usize).min(f.width - 1),
            ((b.y + b.height) as usize).min(f.height - 1),
        );
        for t in 0..3 {
            for x in x0..=x1 {
                for y in [y0 + t, y1 - t] {
                    f.set(x, y, 0, 1.0);
                    f.set(x, y, 1, 0.0);
                    f.set(x, y, 2, 0.0);
                }
            }
            for y in y0..=y1 {
                for x in [x0 + t, x1 - t] {
                    f.set(x, y, 0, 1.0);
                    f.set(x, y, 1, 0.0);
                    f.set(x, y, 2, 0.0);
                }
            }
        }
    }
    save_png(&f, out)?;
    Ok(())
}
