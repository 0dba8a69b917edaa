from django import forms


class RebuildForm(forms.Form):
    slowdown_ms = forms.IntegerField(
        label="Pause per chunk of 100 products (ms)", min_value=0, max_value=5000, initial=700,
        help_text="Only so there is time to watch the progress bar.",
    )
    fail = forms.BooleanField(label="Make it fail on a bad product", required=False)


class ImportFeedForm(forms.Form):
    supplier = forms.ChoiceField(label="Supplier feed", choices=[
        ("northwind", "Northwind Supplies (a clean feed)"),
        ("borealis", "Borealis Outdoor (has a bad row: fails for good)"),
    ], initial="borealis")
