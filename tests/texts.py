"""Article texts shared by several test modules (near-duplicates, boilerplate, grouping).

Two articles on one topic (rosacea), as two clinics would write them: shared vocabulary, different text; and
the lines a partner site adds when it reposts one. A plain module of constants: test modules import it, never
each other.
"""

# Two articles on one topic (rosacea), as two clinics would write them: shared vocabulary, different text.
TRIGGERS = (
    "Rosacea is a long-term inflammatory skin condition that mainly affects the central face, causing "
    "persistent redness, visible blood vessels and sometimes small bumps that look like acne. Many patients "
    "notice that their symptoms come and go in flares, and that certain everyday situations reliably make "
    "the redness worse. Keeping a simple diary for a few weeks is the most practical way to find your own "
    "triggers. Common culprits include hot drinks, spicy food, alcohol (red wine in particular), strong "
    "sunlight, wind, very cold weather, saunas and intense exercise. Emotional stress and sudden changes in "
    "temperature can also provoke flushing within minutes. Some skin care products sting rosacea-prone skin: "
    "alcohol-based toners, menthol, witch hazel, fragrance and harsh scrubs are best avoided. A daily "
    "broad-spectrum sunscreen with SPF 30 or higher protects against ultraviolet light, which is one of the "
    "most frequent triggers reported by patients. Gentle cleansing with lukewarm water and a fragrance-free "
    "moisturiser helps to restore the skin barrier. Avoiding triggers does not cure rosacea, but it reduces "
    "how often flares happen and makes medical treatment more effective. If redness persists despite these "
    "measures, a dermatologist can prescribe creams such as ivermectin or azelaic acid, or recommend laser "
    "therapy for visible vessels."
)
LASERS = (
    "Laser and light treatments are the most effective way to reduce the persistent redness and visible "
    "blood vessels of rosacea, which creams and tablets rarely clear completely. The pulsed dye laser, often "
    "known by the brand name VBeam, emits yellow light at 595 nanometres that is absorbed by haemoglobin in "
    "small vessels; the vessels are heated and gradually reabsorbed by the body over the following weeks. "
    "Intense pulsed light (IPL) uses a broad spectrum of wavelengths filtered to target the same vessels and "
    "can also improve brown sun damage. Most patients need three to four sessions about a month apart, each "
    "lasting fifteen to thirty minutes. A cooling spray or gel makes the procedure comfortable, and no "
    "anaesthetic is usually required. Afterwards the skin may look flushed or slightly swollen for a day or "
    "two; with higher settings short-lived purple bruising can appear and fades within a week or so. "
    "Results are long-lasting but not permanent, because rosacea is a chronic condition and new vessels may "
    "form, so many patients return for a maintenance session once a year. Treatment is avoided on tanned "
    "skin, and strict sun protection before and after each session lowers the risk of pigment changes. Your "
    "dermatologist will assess which device suits your skin type."
)
ARTICLE = TRIGGERS + "\n" + LASERS  # one 400-word article: "Rosacea: triggers and laser treatment"
REPOST_HEADER = "Originally published on the Riverside Dermatology blog. Share this article:\n"
REPOST_FOOTER = "\nBook a consultation with one of our dermatologists today."
