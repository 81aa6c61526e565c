// Pictures people look at instead of reading numbers: the training loss curve, the held-out curves of compared methods and
// per-category memory bars, as SVG files drawn with OxyPlot.
using OxyPlot;
using OxyPlot.Axes;
using OxyPlot.Series;

namespace VkPeft.Peft.Reports;

public static class Plots
{
    /// <summary>Writes a loss-curve SVG: train loss per step and held-out loss where evaluated.</summary>
    public static void LossCurve(string path, IReadOnlyList<(int Step, double Loss)> train, IReadOnlyList<(int Step, double Loss)> eval, string title)
    {
        var model = LossModel(title);
        AddCurve(model, "train", train, Palette[0], 1.5, markers: false);
        if (eval.Count > 0) AddCurve(model, "held-out", eval, Palette[3], 2, markers: true);
        Save(path, model, 800, 450);
    }

    /// <summary>Writes one SVG with several labelled loss curves (e.g. the held-out loss of each method compared), each in its own colour.</summary>
    public static void LossCurves(string path, IReadOnlyList<(string Label, IReadOnlyList<(int Step, double Loss)> Points)> curves, string title)
    {
        var model = LossModel(title);
        for (int i = 0; i < curves.Count; i++)
            AddCurve(model, curves[i].Label, curves[i].Points, Palette[i % Palette.Length], 2, markers: true);
        Save(path, model, 800, 450);
    }

    /// <summary>Distinguishable line colours (matplotlib's tab10).</summary>
    private static readonly OxyColor[] Palette =
    [
        OxyColor.FromRgb(0x1f, 0x77, 0xb4), OxyColor.FromRgb(0xff, 0x7f, 0x0e), OxyColor.FromRgb(0x2c, 0xa0, 0x2c), OxyColor.FromRgb(0xd6, 0x27, 0x28),
        OxyColor.FromRgb(0x94, 0x67, 0xbd), OxyColor.FromRgb(0x8c, 0x56, 0x4b), OxyColor.FromRgb(0xe3, 0x77, 0xc2), OxyColor.FromRgb(0x7f, 0x7f, 0x7f),
        OxyColor.FromRgb(0xbc, 0xbd, 0x22), OxyColor.FromRgb(0x17, 0xbe, 0xcf),
    ];

    /// <summary>A plot with step and loss axes and a legend.</summary>
    private static PlotModel LossModel(string title)
    {
        var model = new PlotModel { Title = title, Background = OxyColors.White, Padding = new OxyThickness(8, 16, 24, 8) };
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "step", MajorGridlineStyle = LineStyle.Dot });
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Left, Title = "loss (mean NLL per token)", MajorGridlineStyle = LineStyle.Dot });
        model.Legends.Add(new OxyPlot.Legends.Legend { LegendPosition = OxyPlot.Legends.LegendPosition.TopRight, LegendBackground = OxyColor.FromAColor(220, OxyColors.White), LegendPadding = 6 });
        return model;
    }

    private static void AddCurve(PlotModel model, string label, IReadOnlyList<(int Step, double Loss)> points, OxyColor color, double thickness, bool markers)
    {
        var line = new LineSeries { Title = label, Color = color, StrokeThickness = thickness };
        if (markers) { line.MarkerType = MarkerType.Circle; line.MarkerSize = 3; }
        foreach (var (s, l) in points) line.Points.Add(new DataPoint(s, l));
        model.Series.Add(line);
    }

    /// <summary>Writes a horizontal bar chart SVG of bytes per category (values in GiB).</summary>
    public static void MemoryBars(string path, IReadOnlyList<(string Category, double Bytes)> bars, string title)
    {
        var model = new PlotModel { Title = title, Background = OxyColors.White };
        var cat = new CategoryAxis { Position = AxisPosition.Left };
        foreach (var (c, _) in bars) cat.Labels.Add(c);
        model.Axes.Add(cat);
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "GiB", MinimumPadding = 0, AbsoluteMinimum = 0, MajorGridlineStyle = LineStyle.Dot });
        var s = new BarSeries { FillColor = OxyColor.FromRgb(0x2c, 0xa0, 0x2c), LabelFormatString = "{0:0.00}" };
        foreach (var (_, b) in bars) s.Items.Add(new BarItem(b / (1L << 30)));
        model.Series.Add(s);
        Save(path, model, 800, 60 + 40 * bars.Count);
    }

    private static void Save(string path, PlotModel model, int width, int height)
    {
        var tmp = path + ".tmp";
        using (var stream = File.Create(tmp))
            new SvgExporter { Width = width, Height = height }.Export(model, stream);
        File.Move(tmp, path, overwrite: true);
    }
}
