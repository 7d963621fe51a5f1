"""The status flow's decisions: what the endpoint is (``observe``) and how it differs from the settings (``drift``)."""
