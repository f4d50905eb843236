"""tc on clsact: flower rules as data (rule.py), their netlink encoding (flower.py), and batch ops."""
